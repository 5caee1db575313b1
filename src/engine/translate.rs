//! The left system as the engine sees it on a link whose fields mean different things on
//! each side (value maps, scales, composed fields; see [`crate::meaning`]): every record
//! read is translated into the right's meaning, keeping what the system holds for the
//! conditional writes; every write is translated back into the left's form. Everything
//! else in the engine — merge, per-side memory, journal, flow-back — then works in one
//! meaning, unchanged.

use crate::config::{LinkSpec, Owner};
use crate::connectors::{
    BatchResult, Changes, Connector, ConnectorError, Cursor, ReadSpec, Write, WriteOutcome,
};
use crate::model::Side;
use crate::model::{Key, Name, Record, Value};
use std::collections::HashMap;

/// Per unit of the link: whether its values mean something else on the right.
pub(crate) fn translated_units(link: &LinkSpec) -> Vec<bool> {
    link.units
        .iter()
        .map(|u| u.compose.is_some() || u.fields.iter().any(|&f| !link.fields[f].meaning.is_same()))
        .collect()
}

/// Whether any field of the link means something else on the right.
pub(crate) fn needs_translation(link: &LinkSpec) -> bool {
    translated_units(link).contains(&true)
}

/// Translates a left record into the right's meaning in place; what the system holds is
/// kept in `raw`. A value with no meaning on the right (not in the map) is the record's
/// defect: it is quarantined naming the field and the value.
pub(crate) fn to_right_meaning(link: &LinkSpec, rec: &mut Record) {
    let raw = rec.values.clone();
    for unit in &link.units {
        match &unit.compose {
            Some(c) => {
                let parts: Vec<Value> = unit.fields.iter().map(|&f| raw[f].clone()).collect();
                let joined = c.join(&parts);
                for &f in &unit.fields {
                    rec.values[f] = joined.clone();
                }
            }
            None => {
                for &f in &unit.fields {
                    let field = &link.fields[f];
                    if field.meaning.is_same() {
                        continue;
                    }
                    match field
                        .meaning
                        .to_right(&field.transform.apply(raw[f].clone()))
                    {
                        Ok(v) => rec.values[f] = v,
                        Err(why) => {
                            rec.defect
                                .get_or_insert_with(|| format!("field `{}`: {why}", field.name));
                        }
                    }
                }
            }
        }
    }
    rec.raw = Some(raw);
}

/// A unit's values in the right's meaning, from the left's form.
fn unit_to_right(link: &LinkSpec, unit: usize, left: &[Value]) -> Result<Vec<Value>, String> {
    let u = &link.units[unit];
    match &u.compose {
        Some(c) => Ok(vec![c.join(left); u.fields.len()]),
        None => u
            .fields
            .iter()
            .zip(left)
            .map(|(&f, v)| {
                let field = &link.fields[f];
                field.meaning.to_right(&field.transform.apply(v.clone()))
            })
            .collect(),
    }
}

/// A unit's `target` values (the right's meaning) in the left's form, if they survive
/// the way back: read again, they must mean `target`.
///
/// # Errors
/// Why not, naming the unit and the value.
pub(crate) fn unit_to_left(
    link: &LinkSpec,
    unit: usize,
    target: &[Value],
) -> Result<Vec<Value>, String> {
    let u = &link.units[unit];
    let named = |why: String| format!("`{}`: {why}", u.name);
    let left: Vec<Value> = match &u.compose {
        Some(c) => c.split(&target[0], u.fields.len()).map_err(named)?,
        None => u
            .fields
            .iter()
            .zip(target)
            .map(|(&f, v)| link.fields[f].meaning.to_left(v))
            .collect::<Result<_, _>>()
            .map_err(named)?,
    };
    let back = unit_to_right(link, unit, &left).map_err(named)?;
    let survives = back
        .iter()
        .zip(target)
        .zip(&u.fields)
        // In meaning: a JSON object read back is the same as its text the right holds.
        .all(|((b, t), &f)| link.fields[f].transform.apply(b.clone()).same_meaning(t));
    if !survives {
        return Err(named(format!(
            "{} would be written to the left as {} and read back as {}: it does not survive the way back",
            show(target),
            show(&left),
            show(&back)
        )));
    }
    Ok(left)
}

fn show(values: &[Value]) -> String {
    let mut shown: Vec<String> = values.iter().map(ToString::to_string).collect();
    shown.dedup();
    shown.join(" + ")
}

/// How many records `check` names per link before it only counts them.
const NAMED: usize = 20;

/// For `check`: every record whose values have no meaning on the right (left records,
/// as the run would quarantine them), or, in a unit that flows to the left, would not
/// survive the way back (`split(join(x)) ≠ x` on the left, no left form on the right).
///
/// # Errors
/// A scan that fails.
pub(crate) fn untranslatable(
    link: &LinkSpec,
    left: &mut dyn Connector,
    right: &mut dyn Connector,
    layout: &super::layout::Layout,
) -> Result<Vec<String>, crate::Error> {
    let flows_left: Vec<usize> = (0..link.units.len())
        .filter(|&u| link.units[u].owner != Owner::Left)
        .collect();
    let mut found = Vec::new();
    let mut count = 0usize;
    let mut note = |side: Side, rec: &Record, why: String| {
        count += 1;
        if found.len() < NAMED {
            found.push(format!("{side} record {}: {why}", rec.key.display_text()));
        }
    };
    for side in [Side::Left, Side::Right] {
        let spec = layout.read_spec(side).clone();
        let system: &mut dyn Connector = match side {
            Side::Left => &mut *left,
            Side::Right => &mut *right,
        };
        system.scan(&spec, link.batch_size, &mut |records| {
            for rec in records {
                if let Some(why) = &rec.defect {
                    note(side, &rec, why.clone());
                    continue;
                }
                for &u in &flows_left {
                    let unit = &link.units[u];
                    let target: Vec<Value> = unit
                        .fields
                        .iter()
                        .map(|&f| link.fields[f].transform.apply(rec.values[f].clone()))
                        .collect();
                    match unit_to_left(link, u, &target) {
                        Err(why) => note(side, &rec, why),
                        Ok(left) if side == Side::Left => {
                            let raw = rec.raw.as_ref().unwrap_or(&rec.values);
                            let held: Vec<Value> =
                                unit.fields.iter().map(|&f| raw[f].clone()).collect();
                            if left != held {
                                note(
                                    side,
                                    &rec,
                                    format!(
                                        "`{}`: {} would come back from the right as {}: it does not survive the round trip",
                                        unit.name,
                                        show(&held),
                                        show(&left)
                                    ),
                                );
                            }
                        }
                        Ok(_) => {}
                    }
                }
            }
            Ok(())
        })?;
    }
    if count > found.len() {
        found.push(format!("… and {} more records", count - found.len()));
    }
    Ok(found)
}

/// The left connector of a link with meanings: see the module docs.
pub(crate) struct Translated {
    inner: Box<dyn Connector>,
    link: LinkSpec,
    /// Left column → field index.
    field_of: HashMap<Name, usize>,
    /// Field index → unit index.
    unit_of: Vec<usize>,
}

impl Translated {
    /// `inner`, translated when the link needs it.
    pub fn wrap(inner: Box<dyn Connector>, link: &LinkSpec) -> Box<dyn Connector> {
        if !needs_translation(link) {
            return inner;
        }
        let mut unit_of = vec![0; link.fields.len()];
        for (u, unit) in link.units.iter().enumerate() {
            for &f in &unit.fields {
                unit_of[f] = u;
            }
        }
        Box::new(Translated {
            inner,
            field_of: link
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.clone(), i))
                .collect(),
            unit_of,
            link: link.clone(),
        })
    }

    /// Column values in the right's meaning → the left's form. Columns that are no
    /// field (an external id, a soft-delete mark) pass as they are. `drop_nulls`: a create
    /// leaves NULLs out so the table's defaults apply.
    fn left_form(
        &self,
        cols: &[(Name, Value)],
        drop_nulls: bool,
    ) -> Result<Vec<(Name, Value)>, String> {
        let mut out: Vec<(Name, Value)> = Vec::with_capacity(cols.len());
        let mut done = vec![false; self.link.units.len()];
        for (col, v) in cols {
            let Some(&f) = self.field_of.get(col) else {
                out.push((col.clone(), v.clone()));
                continue;
            };
            let u = self.unit_of[f];
            let unit = &self.link.units[u];
            if unit.compose.is_some() {
                if done[u] {
                    continue;
                }
                done[u] = true;
                let target = vec![v.clone(); unit.fields.len()];
                let parts = unit_to_left(&self.link, u, &target)?;
                for (&p, value) in unit.fields.iter().zip(parts) {
                    if !(drop_nulls && value == Value::Null) {
                        out.push((self.link.fields[p].name.clone(), value));
                    }
                }
                continue;
            }
            let field = &self.link.fields[f];
            let value = field
                .meaning
                .to_left(v)
                .map_err(|why| format!("`{}`: {why}", field.name))?;
            if !(drop_nulls && value == Value::Null) {
                out.push((col.clone(), value));
            }
        }
        Ok(out)
    }

    fn translated(link: &LinkSpec, mut records: Vec<Record>) -> Vec<Record> {
        for r in &mut records {
            to_right_meaning(link, r);
        }
        records
    }
}

impl Connector for Translated {
    fn capabilities(&self) -> crate::connectors::Capabilities {
        self.inner.capabilities()
    }

    crate::connectors::forward_to_inner!(
        identity,
        describe,
        is_empty,
        count,
        digests,
        feed_changes,
        confirm_feed,
        feed_retained,
        mark_own_writes
    );

    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError> {
        let link = &self.link;
        self.inner.scan(spec, batch_size, &mut |records| {
            consumer(Self::translated(link, records))
        })
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        let records = self.inner.fetch(spec, keys)?;
        Ok(Self::translated(&self.link, records))
    }

    fn changes(
        &mut self,
        spec: &ReadSpec,
        since: Option<&Cursor>,
        limit: usize,
    ) -> Result<Changes, ConnectorError> {
        let mut changes = self.inner.changes(spec, since, limit)?;
        changes.upserted = Self::translated(&self.link, changes.upserted);
        Ok(changes)
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        // A write whose values do not survive the way back is refused on its own (the
        // planner checks first; this is the last line), the rest go as one batch.
        let mut sent = Vec::with_capacity(writes.len());
        let mut refused: Vec<Option<WriteOutcome>> = Vec::with_capacity(writes.len());
        for w in writes {
            let translated = match w {
                Write::Create { values } => self
                    .left_form(values, true)
                    .map(|values| Write::Create { values }),
                Write::Update {
                    key,
                    set,
                    expect,
                    version,
                } => self.left_form(set, false).map(|set| Write::Update {
                    key: key.clone(),
                    set,
                    expect: expect.clone(),
                    version: version.clone(),
                }),
                Write::Delete { .. } => Ok(w.clone()),
            };
            match translated {
                Ok(t) => {
                    sent.push(t);
                    refused.push(None);
                }
                Err(why) => refused.push(Some(WriteOutcome::Rejected(why))),
            }
        }
        let result = self.inner.apply(spec, &sent)?;
        let link = &self.link;
        let sent = result
            .outcomes
            .into_iter()
            .zip(result.stored.into_iter().map(|r| {
                r.map(|mut r| {
                    to_right_meaning(link, &mut r);
                    r
                })
            }));
        Ok(BatchResult::merged(refused, sent))
    }
}
