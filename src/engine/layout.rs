//! Which columns a link reads on each side, and where each one sits in a record.
//! Built once per cycle, after checking every named column against the systems.

use crate::Error;
use crate::config::{Config, DeleteRule, LinkSpec};
use crate::connectors::{Connector, ConnectorError, ReadSpec};
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
        let describe = |conn: &mut dyn Connector, side: Side| -> Result<Vec<String>, Error> {
            let ep = link.endpoint(side);
            match conn.describe(&ep.collection) {
                Ok(cols) => Ok(cols.into_iter().map(|c| c.name).collect()),
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
        let left_cols = describe(left, Side::Left)?;
        let right_cols = describe(right, Side::Right)?;
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
        let mut left_read = ReadSpec {
            collection: link.left.collection.clone(),
            key: link.left.key.clone(),
            columns: link.fields.iter().map(|f| f.name.to_string()).collect(),
        };
        let mut right_read = ReadSpec {
            collection: link.right.collection.clone(),
            key: link.right.key.clone(),
            columns: link.fields.iter().map(|f| f.right.to_string()).collect(),
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
        })
    }

    pub fn read_spec(&self, side: Side) -> &ReadSpec {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    /// The text of a record's external-id column (the other side's key), if set.
    pub fn ext_ref_of(&self, side: Side, rec: &Record) -> Option<String> {
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
