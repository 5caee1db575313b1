//! What a person decides: a conflict resolved, a quarantined record released. The CLI
//! (`conflicts resolve`, `quarantine release`) and the dashboard make the same decision
//! through here, and each is journaled with who made it.

use crate::Error;
use crate::config::Config;
use crate::model::{Key, Side, Value};
use crate::state::{Change, ConflictRow, StateStore};
use std::borrow::Cow;

/// How a conflict is decided.
#[derive(Debug, Clone)]
pub enum Decision {
    Take(Side),
    /// A value typed by a person (`NULL` for null; numbers are numbers).
    Value(String),
}

/// `left:KEY` or `right:KEY` (or a bare key, meaning the left one), without the side.
pub fn strip_side(key: &str) -> &str {
    key.strip_prefix("left:")
        .or_else(|| key.strip_prefix("right:"))
        .unwrap_or(key)
}

/// The encoded key a person means when filtering the journal (`42` may be an integer or
/// text key): with a link, the form the link's journal holds; otherwise the number or
/// text `key` reads as.
///
/// # Errors
/// A state store failure.
pub fn journal_key(state: &mut StateStore, link: Option<&str>, key: &str) -> Result<String, Error> {
    let text = strip_side(key);
    let typed = Key(vec![Value::parse_cli(text)]);
    if let Some(link) = link {
        for candidate in [&typed, &Key(vec![Value::Text(text.to_string())])] {
            let encoded = candidate.encode();
            if !state
                .journal(Some(link), Some(&encoded), None, 1)?
                .is_empty()
            {
                return Ok(encoded);
            }
        }
    }
    Ok(typed.encode())
}

/// The conflict on `field` of the record `key` (`left:K`, `right:K` or a bare left key).
///
/// # Errors
/// [`Error::NotFound`] when there is none; a state store failure.
pub fn find_conflict(
    state: &mut StateStore,
    link: &str,
    key: &str,
    field: &str,
) -> Result<ConflictRow, Error> {
    let want_right = key.starts_with("right:");
    let text = strip_side(key);
    state
        .conflicts(Some(link))?
        .into_iter()
        .find(|c| {
            let k = if want_right {
                &c.right_key
            } else {
                &c.left_key
            };
            c.unit == field
                && Key::decode(k).map(|k| k.display_text()).ok().as_deref() == Some(text)
        })
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no conflict on {link} {key} {field} (see `syncline conflicts list`)"
            ))
        })
}

/// Decides a conflict: the next run writes the chosen value wherever it differs. Returns
/// the value chosen. Journaled as `resolve` with `who` in its reason.
///
/// # Errors
/// No such link or conflict; a typed value for a field group; a state store failure.
pub fn resolve_conflict(
    config: &Config,
    state: &mut StateStore,
    link: &str,
    key: &str,
    field: &str,
    decision: &Decision,
    who: &str,
) -> Result<Vec<Value>, Error> {
    let spec = config
        .link(link)
        .ok_or_else(|| Error::NotFound(format!("no link named `{link}`")))?;
    let conflict = find_conflict(state, link, key, field)?;
    let chosen: Vec<Value> = match decision {
        Decision::Take(Side::Left) => conflict.left_value.clone(),
        Decision::Take(Side::Right) => conflict.right_value.clone(),
        Decision::Value(typed) => {
            let unit = spec
                .units
                .iter()
                .find(|u| u.name == conflict.unit)
                .ok_or_else(|| {
                    Error::NotFound(format!("`{field}` is no longer a field of link `{link}`"))
                })?;
            if unit.fields.len() != 1 {
                return Err(Error::Refused(format!(
                    "`{field}` is a field group; resolve it by taking the left or the right value"
                )));
            }
            vec![
                spec.fields[unit.fields[0]]
                    .transform
                    .apply(Value::parse_cli(typed)),
            ]
        }
    };
    let how = match decision {
        Decision::Take(side) => format!("took the {side} value"),
        Decision::Value(_) => "typed a value".to_string(),
    };
    let reason = format!("conflict resolved by {who}: {how}");
    let new = match chosen.as_slice() {
        [one] => Some(one.clone()),
        many => Some(Value::Text(
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    };
    let change = Change {
        side: Side::Left,
        op: Cow::Borrowed("resolve"),
        field: Some(conflict.unit.clone()),
        old: None,
        new,
        reason: Cow::Owned(reason),
    };
    state.transaction(|s| {
        s.resolve_conflict(link, &conflict.left_key, &conflict.unit, &chosen)?;
        s.journal_decision(
            link,
            Some(&conflict.left_key),
            Some(&conflict.right_key),
            &change,
            who,
        )
    })?;
    Ok(chosen)
}

/// Releases a quarantined record (or one field of it): the next run handles it again.
/// Returns how many entries were released. Journaled as `release` with `who`.
///
/// # Errors
/// Nothing quarantined under that key; a state store failure.
pub fn release_quarantine(
    state: &mut StateStore,
    link: &str,
    key: &str,
    field: Option<&str>,
    who: &str,
) -> Result<u64, Error> {
    let rows = state.quarantine(Some(link))?;
    let found = rows
        .iter()
        .find(|q| {
            Key::decode(&q.key)
                .map(|k| k.display_text())
                .ok()
                .as_deref()
                == Some(strip_side(key))
        })
        .ok_or_else(|| Error::NotFound(format!("nothing quarantined for {link} {key}")))?;
    let (encoded, side) = (found.key.clone(), found.side);
    let change = Change {
        side,
        op: Cow::Borrowed("release"),
        field: field.map(str::to_string),
        old: None,
        new: None,
        reason: Cow::Owned(format!("quarantine released by {who}")),
    };
    let (left_key, right_key) = match side {
        Side::Left => (Some(encoded.as_str()), None),
        Side::Right => (None, Some(encoded.as_str())),
    };
    Ok(state.transaction(|s| {
        let n = s.release_quarantine(link, &encoded, field)?;
        s.journal_decision(link, left_key, right_key, &change, who)?;
        Ok(n)
    })?)
}

/// Who a decision made on this machine's command line is journaled as.
pub fn cli_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user} (command line)")
}
