//! Records coming and going: a create on the other side (and the check that it survives
//! the way into the left's form), and what a delete on one side does to its partner.

use super::*;

impl Planner<'_> {
    /// Creates `rec` (from side `from`) on the other side. With `replacing`, the pair
    /// already exists and gets the new record (a delete-vs-edit won by the edit).
    pub(super) fn plan_create(
        &mut self,
        from: Side,
        rec: Record,
        replacing: Option<&PairRow>,
    ) -> Result<(), Error> {
        if let Some(v) = self.verify.as_mut() {
            v.alone(from, &rec);
            return Ok(());
        }
        let to = from.other();
        let Record { key, values, .. } = rec;
        // NULLs are left out so the receiving table's defaults apply (a NOT NULL column
        // with a default accepts the create); what the receiver filled in is read back
        // and remembered, or flows back (see `apply::created_state`).
        // Sized once for the fields and an external id: collecting through the filter
        // would grow it twice per record.
        let mut sent: Vec<(Name, Value)> = Vec::with_capacity(self.link.fields.len() + 1);
        for (i, (f, v)) in self.link.fields.iter().zip(values).enumerate() {
            let v = f.transform.apply(v);
            let column = self.link.field_column(i, to);
            // A composed column is sent once.
            if v != Value::Null && !(f.composed && sent.iter().any(|(c, _)| c == column)) {
                sent.push((column.clone(), v));
            }
        }
        // A record whose values do not survive the way into the left's form is held,
        // not created half-right (see `translate`).
        if to == Side::Left {
            let translated = (0..self.link.units.len()).filter(|&u| self.translated[u]);
            for (u, unit) in translated.map(|u| (u, &self.link.units[u])) {
                let target: Vec<Value> = unit
                    .fields
                    .iter()
                    .map(|&f| {
                        let column = self.link.field_column(f, to);
                        sent.iter()
                            .find(|(c, _)| c == column)
                            .map_or(Value::Null, |(_, v)| v.clone())
                    })
                    .collect();
                if let Err(why) = translate::unit_to_left(self.link, u, &target) {
                    return self.quarantine(
                        from,
                        &key.encode(),
                        &unit.name.clone(),
                        QuarantineKind::Meaning,
                        format!("not created on the left: {why}"),
                    );
                }
            }
        }
        if let Some(col) = self.link.external_ref(to) {
            sent.push((col.into(), Value::Text(key.display_text())));
        }
        let (left_key, right_key) = match from {
            Side::Left => (Some(key), None),
            Side::Right => (None, Some(key)),
        };
        // Nothing of a replaced pair carries over (the commit writes the pair afresh),
        // and the base is what the create sends: the commit takes it from the write once
        // the record exists (see `apply::write_out`), instead of the plan carrying a copy.
        let mut plan = PairPlan::new(left_key, right_key, Fate::Create(to), None);
        plan.changes[side_index(to)].push(Change {
            side: to,
            op: "create".into(),
            field: None,
            old: None,
            new: None,
            reason: match replacing {
                Some(_) => format!("re-created: deleted on the {to} but edited on the {from} (delete_vs_edit = edit-wins)").into(),
                None => match from {
                    Side::Left => "new on the left".into(),
                    Side::Right => "new on the right".into(),
                },
            },
        });
        plan.writes[side_index(to)] = Some(Write::Create { values: sent });
        self.report.direction(to).created += 1;
        self.stage(plan)
    }

    /// The record on `deleted_on` is gone; `survivor` is its partner.
    pub(super) fn plan_deleted(
        &mut self,
        deleted_on: Side,
        survivor: &Record,
        pair: PairRow,
    ) -> Result<(), Error> {
        if let Some(v) = self.verify.as_mut() {
            v.alone(deleted_on.other(), survivor);
            return Ok(());
        }
        let on = deleted_on.other();
        let survivor_key = survivor.key.encode();
        let edited = (0..self.link.units.len()).any(|u| {
            Some(self.unit_values(u, survivor)) != self.side_base(u, &pair.base, &pair.held, on)
        });
        let rule = self.link.delete_rule(deleted_on);
        let rule = if edited && rule != DeleteRule::Ignore {
            match self.link.delete_vs_edit {
                DeleteVsEdit::DeleteWins => rule,
                DeleteVsEdit::EditWins => {
                    return self.plan_create(on, survivor.clone(), Some(&pair));
                }
                DeleteVsEdit::Hold => {
                    return self.quarantine(on, &survivor_key, "", QuarantineKind::DeleteVsEdit, format!(
                        "deleted on the {deleted_on} but edited on the {on} since the last run (delete_vs_edit = hold): delete it here too, or restore it there"
                    ));
                }
            }
        } else {
            rule
        };
        let left_key = Key::decode(&pair.left_key)
            .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
        let right_key = Key::decode(&pair.right_key)
            .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
        let expect = self.as_read(on, survivor);
        let change = |op: &'static str, reason: String| Change {
            side: on,
            op: op.into(),
            field: None,
            old: None,
            new: None,
            reason: reason.into(),
        };
        match rule {
            DeleteRule::Hold => self.quarantine(on, &survivor_key, "", QuarantineKind::DeleteHeld, format!(
                "deleted on the {deleted_on}; on_delete.{deleted_on} = hold: delete it here too, or restore it there"
            )),
            DeleteRule::Ignore => {
                let mut plan = PairPlan::new(
                    Some(left_key),
                    Some(right_key),
                    Fate::Tombstone { deleted_on },
                    Some(pair),
                );
                plan.state_changes.push(change(
                    "unlink",
                    format!("deleted on the {deleted_on}; on_delete.{deleted_on} = ignore"),
                ));
                self.stage(plan)
            }
            DeleteRule::Propagate => {
                let mut plan = PairPlan::new(
                    Some(left_key),
                    Some(right_key),
                    Fate::Delete(on),
                    Some(pair),
                );
                plan.writes[side_index(on)] = Some(Write::Delete {
                    key: survivor.key.clone(),
                    expect,
                    version: survivor.version.clone(),
                });
                plan.changes[side_index(on)].push(change(
                    "delete",
                    format!("deleted on the {deleted_on}; on_delete.{deleted_on} = propagate"),
                ));
                self.report.direction(on).deleted += 1;
                self.report.planned_deletes[side_index(on)] += 1;
                self.stage(plan)
            }
            DeleteRule::Soft { column, value } => {
                let mut plan = PairPlan::new(
                    Some(left_key),
                    Some(right_key),
                    Fate::Tombstone { deleted_on },
                    Some(pair),
                );
                plan.writes[side_index(on)] = Some(Write::Update {
                    key: survivor.key.clone(),
                    set: vec![(column.as_str().into(), value.clone())],
                    expect,
                    version: survivor.version.clone(),
                });
                plan.changes[side_index(on)].push(Change {
                    side: on,
                    op: "soft_delete".into(),
                    field: Some(column),
                    old: None,
                    new: Some(value),
                    reason: format!("deleted on the {deleted_on}; on_delete.{deleted_on} = soft").into(),
                });
                self.report.direction(on).deleted += 1;
                self.report.planned_deletes[side_index(on)] += 1;
                self.stage(plan)
            }
        }
    }
}
