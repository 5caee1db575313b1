//! `explain`: where each field's value of one record came from.

use super::io::LinkIo;
use crate::Error;
use crate::config::{Config, LinkSpec};
use crate::model::{Key, Record, Side, Value};
use crate::state::StateStore;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct FieldExplanation {
    pub field: String,
    pub right_column: String,
    pub owner: String,
    pub policy: String,
    /// The left's value in the right's meaning: what is compared and remembered.
    pub left: Option<serde_json::Value>,
    /// The left's value as its system holds it, where a value map, scale or composed
    /// column gives it another meaning on the right.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_as_held: Option<serde_json::Value>,
    pub right: Option<serde_json::Value>,
    pub base: Option<serde_json::Value>,
    pub state: String,
    /// The last applied write: run, time, side written, reason.
    pub last_write: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub link: String,
    pub left_key: Option<String>,
    pub right_key: Option<String>,
    pub linked: bool,
    pub fields: Vec<FieldExplanation>,
    pub conflicts: Vec<String>,
    pub quarantine: Vec<String>,
}

/// Candidate typed keys for a key typed by a person (`42` may be an integer or text).
fn candidate_keys(text: &str, columns: usize) -> Vec<Key> {
    let parts: Vec<&str> = if columns == 1 {
        vec![text]
    } else {
        text.split(',').collect()
    };
    let typed = Key(parts.iter().map(|p| Value::parse_cli(p)).collect());
    let as_text = Key(parts.iter().map(|p| Value::Text(p.to_string())).collect());
    if typed == as_text {
        vec![typed]
    } else {
        vec![typed, as_text]
    }
}

fn find(io: &mut LinkIo, side: Side, text: &str, key_cols: usize) -> Result<Option<Record>, Error> {
    for key in candidate_keys(text, key_cols) {
        let spec = io.layout.read_spec(side).clone();
        if let Some(r) = io.connector(side).fetch(&spec, &[key])?.into_iter().next() {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

/// Resolves `left:KEY` / `right:KEY` (or a bare left key) to the pair's encoded left
/// key, looking in the id map and the systems.
pub fn explain(
    config: &Config,
    link: &LinkSpec,
    state: &mut StateStore,
    which: &str,
) -> Result<Explanation, Error> {
    let (side, text) = match which.split_once(':') {
        Some(("left", k)) => (Side::Left, k),
        Some(("right", k)) => (Side::Right, k),
        _ => (Side::Left, which),
    };
    let mut io = LinkIo::open(config, link)?;
    let mut pair = None;
    let key_cols = link.endpoint(side).key.len();
    for key in candidate_keys(text, key_cols) {
        if let Some(p) = state
            .pairs_by(&link.name, side, &[key.encode()])?
            .remove(&key.encode())
        {
            pair = Some(p);
            break;
        }
    }
    let this = find(&mut io, side, text, key_cols)?;
    if pair.is_none() && this.is_none() {
        return Err(Error::NotFound(format!(
            "link `{}`: no record {side}:{text} in {} and none in the id map",
            link.name,
            link.endpoint(side).label()
        )));
    }
    let decode = |k: &str| Key::decode(k).ok();
    let (left_rec, right_rec) = match &pair {
        Some(p) => {
            let l = decode(&p.left_key)
                .map(|k| io.left.fetch(&io.layout.left.clone(), &[k]))
                .transpose()?
                .and_then(|v| v.into_iter().next());
            let r = decode(&p.right_key)
                .map(|k| io.right.fetch(&io.layout.right.clone(), &[k]))
                .transpose()?
                .and_then(|v| v.into_iter().next());
            (l, r)
        }
        None if side == Side::Left => (this, None),
        None => (None, this),
    };
    let left_key = pair
        .as_ref()
        .map(|p| p.left_key.clone())
        .or_else(|| left_rec.as_ref().map(|r| r.key.encode()));
    let conflicts: Vec<_> = match &left_key {
        Some(lk) => state
            .conflicts(Some(&link.name))?
            .into_iter()
            .filter(|c| &c.left_key == lk)
            .collect(),
        None => Vec::new(),
    };
    let quarantine: Vec<String> = state
        .quarantine(Some(&link.name))?
        .into_iter()
        .filter(|q| {
            Some(&q.key) == left_key.as_ref()
                || Some(&q.key) == pair.as_ref().map(|p| &p.right_key)
                || Some(q.key.clone()) == right_rec.as_ref().map(|r| r.key.encode())
        })
        .map(|q| {
            format!(
                "{} {}: {}",
                q.kind,
                if q.field.is_empty() {
                    "(record)".into()
                } else {
                    q.field.clone()
                },
                q.reason
            )
        })
        .collect();
    let mut fields = Vec::new();
    for unit in &link.units {
        for &f in &unit.fields {
            let spec = &link.fields[f];
            let base = pair.as_ref().and_then(|p| p.base.get(&spec.name).cloned());
            let lv = left_rec.as_ref().map(|r| r.values[f].clone());
            let left_as_held = left_rec
                .as_ref()
                .and_then(|r| r.raw.as_ref())
                .map(|raw| raw[f].clone())
                .filter(|raw| Some(raw) != lv.as_ref())
                .map(|v| v.to_json());
            let rv = right_rec.as_ref().map(|r| r.values[f].clone());
            let norm = |v: &Option<Value>| v.clone().map(|v| spec.transform.apply(v));
            let state_word = if conflicts.iter().any(|c| c.unit == unit.name) {
                "conflict (see `syncline conflicts list`)".to_string()
            } else if pair.is_none() {
                "not linked yet".to_string()
            } else {
                match (norm(&lv), norm(&rv), &base) {
                    (Some(l), Some(r), Some(b)) if l == r && &l == b => "in sync".into(),
                    (Some(l), Some(r), _) if l == r => "in sync (base catches up next run)".into(),
                    (Some(l), Some(_), Some(b)) if &l != b => {
                        "changed on the left since the last run".into()
                    }
                    (Some(_), Some(r), Some(b)) if &r != b => {
                        "changed on the right since the last run".into()
                    }
                    _ => "differs".into(),
                }
            };
            let last_write = match &left_key {
                Some(lk) => state.last_write(&link.name, lk, &spec.name)?.map(|(run, at, reason, side)| {
                    serde_json::json!({ "run": run, "at": at, "side": side, "reason": reason })
                }),
                None => None,
            };
            fields.push(FieldExplanation {
                field: spec.name.to_string(),
                right_column: spec.right.to_string(),
                owner: unit.owner.as_str().into(),
                policy: if unit.owner == crate::config::Owner::Both {
                    link.policy_of(unit).as_str().into()
                } else {
                    "-".into()
                },
                left: lv.map(|v| v.to_json()),
                left_as_held,
                right: rv.map(|v| v.to_json()),
                base: base.map(|v| v.to_json()),
                state: state_word,
                last_write,
            });
        }
    }
    Ok(Explanation {
        link: link.name.clone(),
        left_key: left_key
            .as_deref()
            .and_then(decode)
            .map(|k| k.display_text()),
        right_key: pair
            .as_ref()
            .map(|p| p.right_key.clone())
            .or_else(|| right_rec.as_ref().map(|r| r.key.encode()))
            .as_deref()
            .and_then(decode)
            .map(|k| k.display_text()),
        linked: pair.is_some(),
        fields,
        conflicts: conflicts
            .iter()
            .map(|c| format!("{}: {} ({})", c.unit, c.cause, c.status))
            .collect(),
        quarantine,
    })
}
