//! One linked pair, unit by unit: the three-way decision (with a person's resolution
//! and the frozen units), the writes it makes and the bounces it counts.

use super::*;

impl Planner<'_> {
    pub(super) fn rule(&self, unit: usize) -> UnitRule {
        let u = &self.link.units[unit];
        UnitRule {
            owner: u.owner,
            policy: self.link.policy_of(u),
            mode: self.link.mode,
            on_drift: self.link.on_drift,
        }
    }

    pub(super) fn clocks(&self, unit: usize, l: &Record, r: &Record) -> Clocks {
        let (lc, rc) = match self.layout.clocks[unit] {
            Some((lp, rp)) => (
                merge::clock_seconds(&l.values[lp]),
                merge::clock_seconds(&r.values[rp]),
            ),
            None => (None, None),
        };
        Clocks {
            left: lc,
            right: rc,
            skew_seconds: self.link.clock_skew_seconds,
        }
    }

    /// Merges every unit of a pair (linked, or just matched when `pair` is `None`).
    pub(super) fn plan_pair(
        &mut self,
        l: &Record,
        r: &Record,
        pair: Option<PairRow>,
        matched_by: Option<&str>,
    ) -> Result<(), Error> {
        if self.verify.is_some() {
            let units = (0..self.link.units.len())
                .map(|u| {
                    (
                        self.link.units[u].name.clone(),
                        self.unit_values(u, l),
                        self.unit_values(u, r),
                    )
                })
                .collect();
            if let Some(v) = self.verify.as_mut() {
                v.compare(units, l, r);
            }
            return Ok(());
        }
        let left_key = l.key.encode();
        let mut state_dirty = pair.is_none();
        let mut plan = PairPlan::new(Some(l.key.clone()), Some(r.key.clone()), Fate::Keep, pair);
        let mut sets: [Vec<(Name, Value)>; 2] = Default::default();
        if let Some(how) = matched_by {
            plan.state_changes.push(Change {
                side: Side::Right,
                op: "link".into(),
                field: None,
                old: None,
                new: None,
                reason: format!("matched by {how}").into(),
            });
        }
        let records = [l, r];
        for u in 0..self.link.units.len() {
            let unit = &self.link.units[u];
            if self
                .frozen
                .get(&left_key)
                .is_some_and(|units| units.contains(&unit.name))
            {
                self.report.quarantined += 1;
                continue;
            }
            if self.unchanged_as_read(u, l, r, &plan, &left_key) {
                continue;
            }
            let lv = self.unit_values(u, l);
            let rv = self.unit_values(u, r);
            let sides = self.side_bases(u, &plan);
            let (target, reason) = match self.resolution(&left_key, &unit.name, &lv, &rv) {
                Some(value) => (Some(value), "resolved by a person".to_string()),
                None => match merge::decide_sides(
                    &self.rule(u),
                    &lv,
                    &rv,
                    sides
                        .as_ref()
                        .map(|[bl, br]| [bl.as_slice(), br.as_slice()]),
                    self.clocks(u, l, r),
                ) {
                    Decision::Unchanged => {
                        self.count_echo(&plan.marks, &unit.name, &lv);
                        continue;
                    }
                    Decision::Agreed => {
                        self.count_echo(&plan.marks, &unit.name, &lv);
                        for (i, &f) in unit.fields.iter().enumerate() {
                            let name = &self.link.fields[f].name;
                            // The right may hold the same meaning in its own form.
                            plan.base.insert(name.clone(), lv[i].clone());
                            plan.held[0].remove(name);
                            if rv[i] == lv[i] {
                                plan.held[1].remove(name);
                            } else {
                                plan.held[1].insert(name.clone(), rv[i].clone());
                            }
                        }
                        state_dirty = true;
                        continue;
                    }
                    Decision::DriftReported { .. } => {
                        self.report.drift_reported += 1;
                        continue;
                    }
                    Decision::Conflict(cause) => {
                        let bv = self.base_values(u, &plan.base);
                        self.record_conflict(l, r, u, lv, rv, bv, cause.describe())?;
                        continue;
                    }
                    Decision::Write { to, reason } => {
                        let value = if to == Side::Right {
                            lv.clone()
                        } else {
                            rv.clone()
                        };
                        (Some(value), reason.describe())
                    }
                },
            };
            let Some(target) = target else { continue };
            // Write the target value wherever it is not already; it becomes the base.
            let written = [
                !merge::same_meaning(&lv, &target),
                !merge::same_meaning(&rv, &target),
            ];
            // A value that does not survive the way into the left's form is held, not
            // written half-right (see `translate`).
            if written[0]
                && self.translated[u]
                && let Err(why) = translate::unit_to_left(self.link, u, &target)
            {
                let name = unit.name.clone();
                self.quarantine(
                    Side::Right,
                    &r.key.encode(),
                    &name,
                    QuarantineKind::Meaning,
                    format!("cannot be written to the left: {why}"),
                )?;
                continue;
            }
            for to in [Side::Left, Side::Right] {
                let current = if to == Side::Left { &lv } else { &rv };
                if !written[side_index(to)] {
                    // This side already holds it; the base moves only once the other
                    // side's write is confirmed (`base_if`), never before.
                    continue;
                }
                let hash = hash_values(&target);
                let replaced = hash_values(current);
                // A bounce: the run before wrote this same replacement to this side, or
                // the reverse one to the other side (A→B there, B→A here: two systems
                // that each rewrite the other's value).
                let bounces = match plan.marks.get(&unit.name) {
                    Some(m)
                        if m.run == self.run_seq - 1
                            && ((m.side == to && m.hash == hash && m.replaced == replaced)
                                || (m.side != to && m.hash == replaced && m.replaced == hash)) =>
                    {
                        m.bounces + 1
                    }
                    _ => 0,
                };
                if bounces >= 2 {
                    let reason = format!(
                        "field keeps bouncing: syncline wrote {} to the {to} {} runs in a row and the {to} changed it back (a trigger or normalization?); frozen until released",
                        target
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        bounces
                    );
                    self.quarantine(
                        Side::Left,
                        &left_key,
                        &unit.name.clone(),
                        QuarantineKind::Flapping,
                        reason,
                    )?;
                    continue;
                }
                let idx = side_index(to);
                plan.marks_if[idx].insert(
                    unit.name.clone(),
                    Mark {
                        side: to,
                        hash,
                        replaced,
                        run: self.run_seq,
                        bounces,
                    },
                );
                let rec = records[idx];
                let other = 1 - idx;
                let other_now = if other == 0 { &lv } else { &rv };
                let other_base = sides.as_ref().map(|b| &b[other]);
                for (i, &f) in unit.fields.iter().enumerate() {
                    let col = self.link.field_column(f, to).clone();
                    let old = rec.values[f].clone();
                    let name = &self.link.fields[f].name;
                    plan.base_if[idx].insert(name.clone(), target[i].clone());
                    let other_holds = if written[other] {
                        other_base.map(|b| b[i].clone())
                    } else {
                        Some(other_now[i].clone())
                    };
                    if let Some(v) = other_holds {
                        plan.holds_if[idx].insert(name.clone(), v);
                    }
                    // A composed column is set once.
                    if old.same_meaning(&target[i])
                        || self.link.fields[f].composed && sets[idx].iter().any(|(c, _)| *c == col)
                    {
                        continue;
                    }
                    plan.changes[idx].push(Change {
                        side: to,
                        op: "update".into(),
                        field: Some(self.link.fields[f].name.to_string()),
                        old: Some(old.clone()),
                        new: Some(target[i].clone()),
                        reason: reason.clone().into(),
                    });
                    sets[idx].push((col, target[i].clone()));
                }
            }
        }
        for to in [Side::Left, Side::Right] {
            let idx = side_index(to);
            if !sets[idx].is_empty() {
                // Conditional on the whole record as read, not only the columns set:
                // a field changed meanwhile makes the write stale (its edit is seen next
                // run), so whatever else the read-back shows changed, the write did (a
                // trigger), and it is remembered as that side's own form.
                let expect = self.as_read(to, records[idx]);
                plan.writes[idx] = Some(Write::Update {
                    key: records[idx].key.clone(),
                    set: std::mem::take(&mut sets[idx]),
                    expect,
                    version: records[idx].version.clone(),
                });
                self.report.direction(to).updated += 1;
            } else if !plan.base_if[idx].is_empty() {
                // Nothing to write after all (raw values already equal): the base holds.
                let mut done = [false; 2];
                done[idx] = true;
                plan.settle(done, &Default::default(), &Default::default());
                state_dirty = true;
            }
        }
        if plan.writes.iter().all(Option::is_none) {
            self.report.unchanged += 1;
            if !state_dirty {
                return Ok(());
            }
        }
        self.stage(plan)
    }

    /// Whether unit `unit` of a linked pair is unchanged, decided without copying a
    /// value (most units of a steady-state run are): both records and the base hold the
    /// same values, read as is (no transform), and there is no mark to count an echo
    /// against and no conflict a person resolved. `decide` would say `Unchanged`;
    /// debug builds check that it does.
    pub(super) fn unchanged_as_read(
        &self,
        unit: usize,
        l: &Record,
        r: &Record,
        plan: &PairPlan,
        left_key: &str,
    ) -> bool {
        let spec = &self.link.units[unit];
        let unchanged = !plan.marks.contains_key(&spec.name)
            && self
                .conflicts
                .get(left_key)
                .is_none_or(|units| !units.contains_key(&spec.name))
            && spec.fields.iter().all(|&f| {
                let field = &self.link.fields[f];
                let value = &l.values[f];
                field.transform.is_identity()
                    && r.values[f] == *value
                    && plan.base.get(&field.name) == Some(value)
                    && plan.held.iter().all(|h| !h.contains_key(&field.name))
            });
        debug_assert!(
            !unchanged
                || matches!(
                    merge::decide_sides(
                        &self.rule(unit),
                        &self.unit_values(unit, l),
                        &self.unit_values(unit, r),
                        self.side_bases(unit, plan)
                            .as_ref()
                            .map(|[bl, br]| [bl.as_slice(), br.as_slice()]),
                        self.clocks(unit, l, r),
                    ),
                    Decision::Unchanged
                ),
            "the fast path and decide disagree"
        );
        unchanged
    }

    pub(super) fn count_echo(
        &mut self,
        marks: &BTreeMap<String, Mark>,
        unit: &str,
        value: &[Value],
    ) {
        if let Some(m) = marks.get(unit)
            && m.run == self.run_seq - 1
            && m.hash == hash_values(value)
        {
            self.report.echoes_suppressed += 1;
        }
    }

    /// A person's resolution of this unit's conflict, if it still applies (both sides
    /// hold what they held when the conflict was found).
    pub(super) fn resolution(
        &mut self,
        left_key: &str,
        unit: &str,
        lv: &[Value],
        rv: &[Value],
    ) -> Option<Vec<Value>> {
        let c = self.conflicts.get(left_key)?.get(unit)?;
        if c.status != "resolved" || c.left_value != lv || c.right_value != rv {
            return None;
        }
        c.resolution.clone()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_conflict(
        &mut self,
        l: &Record,
        r: &Record,
        unit: usize,
        lv: Vec<Value>,
        rv: Vec<Value>,
        bv: Option<Vec<Value>>,
        cause: &str,
    ) -> Result<(), Error> {
        self.report.conflicts += 1;
        if self.run_id.is_some() {
            self.state.upsert_conflict(
                &ConflictRow {
                    link: self.link.name.clone(),
                    left_key: l.key.encode(),
                    right_key: r.key.encode(),
                    unit: self.link.units[unit].name.clone(),
                    left_value: lv,
                    right_value: rv,
                    base_value: bv,
                    cause: cause.to_string(),
                    status: "open".into(),
                    resolution: None,
                    detected_run: self.run_seq,
                },
                self.run_seq,
            )?;
        }
        Ok(())
    }
}
