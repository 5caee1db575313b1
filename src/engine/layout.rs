//! Which columns a link reads on each side, and where each one sits in a record.
//! Built once per cycle, after checking every named column against the systems.

use crate::Error;
use crate::config::{Config, DeleteRule, LinkSpec};
use crate::connectors::{ColumnInfo, Connector, ConnectorError, ReadSpec};
use crate::model::{Record, Side, Value};
use std::ops::Range;

#[derive(Debug, Clone)]
pub struct Layout {
    pub left: ReadSpec,
    pub right: ReadSpec,
    /// Per unit: position of the (left, right) clock columns.
    pub clocks: Vec<Option<(usize, usize)>>,
    /// Position of the external-id column on (left, right).
    pub ext_ref: (Option<usize>, Option<usize>),
    /// Per side (left, right): position of its cursor column (see `[changes]`).
    pub cursor: [Option<usize>; 2],
    /// The key is carried (see `LinkSpec::key_is_carried`): without a `right_ref`, a right
    /// record's own key is its external id, naming the left record it was made from.
    pub key_carried: bool,
    /// What `check` should warn about what the systems showed (a key no constraint keeps
    /// unique).
    pub warnings: Vec<String>,
}

impl Layout {
    pub fn new(
        config: &Config,
        link: &LinkSpec,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<Layout, Error> {
        let err = |span: Range<usize>, msg: String| {
            Error::Config(
                config
                    .source
                    .error(Some(span), format!("link `{}`: {msg}", link.name)),
            )
        };
        let describe = |conn: &mut dyn Connector, side: Side| -> Result<Vec<ColumnInfo>, Error> {
            let ep = link.endpoint(side);
            match conn.describe(&ep.collection) {
                Ok(cols) => Ok(cols),
                Err(ConnectorError::NoCollection(_)) => Err(err(
                    ep.span.clone(),
                    format!(
                        "{} `{}` does not exist in system `{}`",
                        side, ep.collection, ep.system
                    ),
                )),
                Err(e) => Err(e.into()),
            }
        };
        let left_info = describe(left, Side::Left)?;
        let right_info = describe(right, Side::Right)?;
        let names = |cols: &[ColumnInfo]| cols.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        let (left_cols, right_cols) = (names(&left_info), names(&right_info));
        let cols_of = |side: Side| {
            if side == Side::Left {
                &left_cols
            } else {
                &right_cols
            }
        };
        let check = |side: Side, col: &str, span: Range<usize>, what: &str| -> Result<(), Error> {
            if cols_of(side).iter().any(|c| c == col) {
                Ok(())
            } else {
                Err(err(
                    span,
                    format!(
                        "{what} names column `{col}`, which does not exist in {} (columns: {})",
                        link.endpoint(side).label(),
                        cols_of(side).join(", ")
                    ),
                ))
            }
        };
        for side in [Side::Left, Side::Right] {
            let ep = link.endpoint(side);
            for k in &ep.key {
                check(
                    side,
                    k,
                    ep.key_span.clone().unwrap_or(ep.span.clone()),
                    &format!("{side}_key"),
                )?;
            }
        }
        for (i, f) in link.fields.iter().enumerate() {
            check(
                Side::Left,
                link.field_column(i, Side::Left),
                f.span.clone(),
                &format!("field `{}`", f.name),
            )?;
            check(
                Side::Right,
                link.field_column(i, Side::Right),
                f.span.clone(),
                &format!("field `{}`", f.name),
            )?;
        }
        for &side in link.receiving_sides() {
            let info = if side == Side::Left {
                &left_info
            } else {
                &right_info
            };
            if let Some(problem) = unfillable_on_create(link, side, info) {
                return Err(err(link.span.clone(), problem));
            }
        }
        let mut left_read = ReadSpec {
            collection: link.left.collection.clone(),
            key: link.left.key.clone(),
            columns: link.fields.iter().map(|f| f.name.to_string()).collect(),
            since: None,
            range: None,
        };
        let mut right_read = ReadSpec {
            collection: link.right.collection.clone(),
            key: link.right.key.clone(),
            columns: link.fields.iter().map(|f| f.right.to_string()).collect(),
            since: None,
            range: None,
        };
        let position = |spec: &mut ReadSpec, col: &str| -> usize {
            spec.columns
                .iter()
                .position(|c| c == col)
                .unwrap_or_else(|| {
                    spec.columns.push(col.to_string());
                    spec.columns.len() - 1
                })
        };
        let mut clocks = Vec::new();
        for unit in &link.units {
            clocks.push(match &unit.clock {
                Some(c) => {
                    check(
                        Side::Left,
                        &c.left,
                        unit.span.clone(),
                        &format!("clock of `{}`", unit.name),
                    )?;
                    check(
                        Side::Right,
                        &c.right,
                        unit.span.clone(),
                        &format!("clock of `{}`", unit.name),
                    )?;
                    Some((
                        position(&mut left_read, &c.left),
                        position(&mut right_read, &c.right),
                    ))
                }
                None => None,
            });
        }
        let mut ext_ref = (None, None);
        if let Some(r) = &link.left_ref {
            check(Side::Left, r, link.span.clone(), "left_ref")?;
            ext_ref.0 = Some(position(&mut left_read, r));
        }
        if let Some(r) = &link.right_ref {
            check(Side::Right, r, link.span.clone(), "right_ref")?;
            ext_ref.1 = Some(position(&mut right_read, r));
        }
        let mut cursor = [None, None];
        if let Some(changes) = &link.changes {
            for side in [Side::Left, Side::Right] {
                if let Some(c) = &changes.cursor[side as usize] {
                    check(side, &c.column, c.span.clone(), "changes cursor")?;
                    let spec = if side == Side::Left {
                        &mut left_read
                    } else {
                        &mut right_read
                    };
                    cursor[side as usize] = Some(position(spec, &c.column));
                }
            }
        }
        // A soft delete of the survivor writes a column on the survivor's side.
        for deleted_on in [Side::Left, Side::Right] {
            if let DeleteRule::Soft { column, .. } = link.delete_rule(deleted_on) {
                check(
                    deleted_on.other(),
                    &column,
                    link.span.clone(),
                    "on_delete soft column",
                )?;
            }
        }
        Ok(Layout {
            left: left_read,
            right: right_read,
            clocks,
            ext_ref,
            cursor,
            key_carried: link.key_is_carried() && link.right_ref.is_none(),
            warnings: [(Side::Left, &left_info), (Side::Right, &right_info)]
                .into_iter()
                .filter_map(|(side, info)| key_not_kept_unique(link, side, info))
                .collect(),
        })
    }

    pub(crate) fn read_spec(&self, side: Side) -> &ReadSpec {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    /// The text of a record's external-id column (the other side's key), if set.
    pub(crate) fn ext_ref_of(&self, side: Side, rec: &Record) -> Option<String> {
        if side == Side::Right && self.key_carried {
            return Some(rec.key.display_text());
        }
        let pos = match side {
            Side::Left => self.ext_ref.0,
            Side::Right => self.ext_ref.1,
        }?;
        match &rec.values[pos] {
            Value::Null => None,
            Value::Text(t) if t.is_empty() => None,
            Value::Text(t) => Some(t.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// Why every create on `side` would be refused, if it would: a column that must get a
/// value on insert (NOT NULL, or a key, without a default) that no field fills. Caught
/// before a run, where it once sent every record, had each refused and replayed alone,
/// and quarantined them all.
fn unfillable_on_create(link: &LinkSpec, side: Side, columns: &[ColumnInfo]) -> Option<String> {
    let ep = link.endpoint(side);
    let filled = |name: &str| {
        (0..link.fields.len()).any(|i| &**link.field_column(i, side) == name)
            || link.external_ref(side) == Some(name)
    };
    let missing: Vec<&ColumnInfo> = columns
        .iter()
        .filter(|c| (c.not_null || c.primary_key) && !c.has_default && !filled(&c.name))
        .collect();
    let first = missing.first()?;
    let from = side.other();
    let source_key = &link.endpoint(from).key;
    let is_key = ep.key.contains(&first.name);
    let fix = if is_key && source_key.len() == ep.key.len() {
        // Carry the other side's key: the most common one-way replication.
        let fields: Vec<String> = source_key
            .iter()
            .zip(&ep.key)
            .map(|(s, k)| {
                let (left_col, right_col) = if side == Side::Right { (s, k) } else { (k, s) };
                if left_col == right_col {
                    format!("{left_col} = {{}}")
                } else {
                    format!("{left_col} = {{ right = \"{right_col}\" }}")
                }
            })
            .collect();
        format!(
            "carry the {from} key with `{}` under [links.{}.fields], or give the column a default",
            fields.join("`, `"),
            link.name
        )
    } else {
        format!(
            "map a field to {} or give {} a default",
            if missing.len() == 1 { "it" } else { "each" },
            if missing.len() == 1 { "it" } else { "them" }
        )
    };
    let names: Vec<String> = missing.iter().map(|c| format!("`{}`", c.name)).collect();
    Some(format!(
        "every create on the {side} would be refused: {} of {} {} no default and no field fills {}; {fix}",
        names.join(", "),
        ep.label(),
        if missing.len() == 1 {
            if is_key {
                "is a key with"
            } else {
                "is NOT NULL with"
            }
        } else {
            "are NOT NULL or keys with"
        },
        if missing.len() == 1 { "it" } else { "them" },
    ))
}

/// A warning when nothing in the system keeps `side`'s key unique and non-null (no
/// primary key or unique index on exactly those columns): a run then quarantines every
/// record whose key repeats or is NULL, but cannot prevent them.
fn key_not_kept_unique(link: &LinkSpec, side: Side, columns: &[ColumnInfo]) -> Option<String> {
    let ep = link.endpoint(side);
    let primary: Vec<&str> = columns
        .iter()
        .filter(|c| c.primary_key)
        .map(|c| c.name.as_str())
        .collect();
    let is_primary = !primary.is_empty()
        && primary.len() == ep.key.len()
        && ep.key.iter().all(|k| primary.contains(&k.as_str()));
    let unique_alone = ep.key.len() == 1
        && columns
            .iter()
            .any(|c| c.name == ep.key[0] && c.unique && c.not_null);
    if is_primary || unique_alone {
        return None;
    }
    Some(format!(
        "the {side} key `{}` of {} is not its primary key or a unique NOT NULL column: nothing keeps it unique, so records whose key repeats or is NULL will be quarantined each run; add a primary key or unique index (a file has none: keep its keys unique where it is written)",
        ep.key.join(", "),
        ep.label()
    ))
}
