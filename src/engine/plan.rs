//! Planning: read both sides, resolve identity, merge every unit of every pair, and stage
//! the resulting [`PairPlan`]s. Writes nothing to any system; in a `run` it records the
//! conflicts and quarantine findings it makes.

use super::layout::Layout;
use super::one_behind::OneBehind;
use super::pair_plan::{Fate, PairPlan};
use super::read_ahead::{BadKey, scan_ahead, sort_out_fetched};
use super::report::{LinkReport, PlannedLine};
use super::translate;
use crate::Error;
use crate::config::{DeleteRule, DeleteVsEdit, LinkSpec, Mode};
use crate::connectors::{Connector, Write};
use crate::merge::{self, Clocks, Decision, UnitRule};
use crate::model::{Key, Name, Record, Side, Value};
use crate::state::{
    Change, ConflictRow, Held, Mark, PairRow, QuarantineKind, QuarantineRow, StateStore, Unlinked,
    hash_values,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A left batch between its lookup and its merge: the records, their encoded keys, and
/// the pairs of those that are linked.
struct LeftBatch {
    records: Vec<Record>,
    keys: Vec<String>,
    pairs: HashMap<String, PairRow>,
}

pub(crate) struct Planner<'a> {
    pub(super) link: &'a LinkSpec,
    pub(super) layout: &'a Layout,
    pub(super) state: &'a mut StateStore,
    /// `Some` in a run: findings are recorded. `None` in `plan`: nothing is.
    run_id: Option<i64>,
    pub(super) run_seq: i64,
    pub(super) report: &'a mut LinkReport,
    list_limit: usize,
    /// Units frozen by a person's quarantine, and conflicts, by left key and then unit:
    /// a pair's lookups borrow its key instead of copying it per unit.
    frozen: HashMap<String, HashSet<String>>,
    conflicts: HashMap<String, HashMap<String, ConflictRow>>,
    /// During a streamed first load, plans collect here and are applied batch by batch
    /// instead of being staged.
    pub(super) buffer: Option<Vec<PairPlan>>,
    /// Pairs whose left record the left scan read, and right partners it fetched: what
    /// tells whether the right scan can find anything.
    left_pairs_read: u64,
    partners_fetched: u64,
}

fn side_index(side: Side) -> usize {
    side as usize
}

impl<'a> Planner<'a> {
    pub fn new(
        link: &'a LinkSpec,
        layout: &'a Layout,
        state: &'a mut StateStore,
        run_id: Option<i64>,
        run_seq: i64,
        report: &'a mut LinkReport,
        list_limit: usize,
    ) -> Result<Planner<'a>, Error> {
        let mut frozen: HashMap<String, HashSet<String>> = HashMap::new();
        for (side, key, unit) in state.frozen(&link.name)? {
            // Frozen units are looked up by the pair's left key.
            if side == Side::Left {
                frozen.entry(key).or_default().insert(unit);
            }
        }
        let mut conflicts: HashMap<String, HashMap<String, ConflictRow>> = HashMap::new();
        for c in state.conflicts(Some(&link.name))? {
            conflicts
                .entry(c.left_key.clone())
                .or_default()
                .insert(c.unit.clone(), c);
        }
        Ok(Planner {
            link,
            layout,
            state,
            run_id,
            run_seq,
            report,
            list_limit,
            frozen,
            conflicts,
            buffer: None,
            left_pairs_read: 0,
            partners_fetched: 0,
        })
    }

    /// Whether this is a first load into an empty collection: nothing to link, match or
    /// delete, so every left record is a create planned straight from the scan (see
    /// `first_load`).
    pub fn is_first_load(&mut self, right: &mut dyn Connector) -> Result<bool, Error> {
        Ok(self.state.pair_count(&self.link.name)? == 0 && right.is_empty(&self.layout.right)?)
    }

    /// Plans the link: reads both sides, resolves identity, merges every pair and
    /// stages the plans (each batch's scratch and state writes in one transaction: one
    /// fsync per batch).
    pub fn plan(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<(), Error> {
        let batch = self.link.batch_size;
        let left_spec = self.layout.left.clone();
        let right_spec = self.layout.right.clone();
        // The left scan reads ahead on one thread and fetches each batch's partners from
        // the right on another, while this one merges the batch before; the right scan
        // only consults the state store.
        let left_records = std::thread::scope(|scope| -> Result<u64, Error> {
            let (fetch_from, fetch_spec) = (&mut *right, &right_spec);
            let mut fetcher = OneBehind::start(scope, move |keys: Vec<Key>| {
                fetch_from.fetch(fetch_spec, &keys)
            });
            let scanned = scan_ahead(left, &left_spec, batch, &mut |records, bad| {
                if records.is_empty() {
                    return self.in_transaction(|p| p.keep_out(Side::Left, bad));
                }
                let (looked_up, partner_keys) = self.in_transaction(|p| {
                    p.keep_out(Side::Left, bad)?;
                    p.left_lookup(records)
                })?;
                let before = fetcher.receive();
                fetcher.send(looked_up, partner_keys);
                match before {
                    Some((before, partners)) => {
                        self.in_transaction(|p| p.left_merge(before, partners?))
                    }
                    None => Ok(()),
                }
            })?;
            if let Some((last, partners)) = fetcher.finish() {
                self.in_transaction(|p| p.left_merge(last, partners?))?;
            }
            Ok(scanned)
        })?;
        self.report.left_records = left_records;
        // The right scan looks for two things: records no pair holds, and pairs whose
        // left record is gone. If the left scan read every pair's left record and the
        // right holds exactly the partners it fetched, there are neither: counted, not
        // assumed, and any difference runs the scan.
        let pairs = self.state.pair_count(&self.link.name)?;
        let every_left_read = u64::try_from(pairs).is_ok_and(|n| n == self.left_pairs_read);
        if every_left_read && right.count(&right_spec)? == Some(self.partners_fetched) {
            self.report.right_records = self.partners_fetched;
        } else {
            let right_records = scan_ahead(right, &right_spec, batch, &mut |records, bad| {
                self.in_transaction(|p| {
                    p.keep_out(Side::Right, bad)?;
                    p.right_batch(records, &mut *left)
                })
            })?;
            self.report.right_records = right_records;
            self.in_transaction(|p| p.forget_vanished_pairs(&mut *left, &mut *right))?;
        }
        self.in_transaction(|p| p.match_and_create())
    }

    /// Records kept out of the cycle for their keys (see [`BadKey`]): quarantined with the
    /// reason, and marked seen, so that a linked record whose key now repeats is never
    /// taken for deleted.
    pub(super) fn keep_out(&mut self, side: Side, bad: Vec<BadKey>) -> Result<(), Error> {
        if bad.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = bad.iter().map(|b| b.key.encode()).collect();
        self.state.mark_seen(side, &keys)?;
        for (b, key) in bad.into_iter().zip(&keys) {
            self.quarantine(
                side,
                key,
                "",
                b.kind,
                format!("{side}:{} is left alone: {}", b.key.display_text(), b.why),
            )?;
        }
        Ok(())
    }

    /// Plans a first load's batch: every record a create on the right. Inside the
    /// caller's state transaction.
    pub(super) fn plan_left_creates(&mut self, records: Vec<Record>) -> Result<(), Error> {
        records
            .into_iter()
            .try_for_each(|rec| self.plan_create(Side::Left, rec, None))
    }

    pub(super) fn in_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // Not `StateStore::transaction`: the closure's error is the engine's, not the store's.
        self.state.begin()?;
        let outcome = f(self);
        self.state.end(outcome.is_ok())?;
        outcome
    }

    /// Units' values of a record, normalized by the fields' transforms.
    fn unit_values(&self, unit: usize, rec: &Record) -> Vec<Value> {
        self.link.units[unit]
            .fields
            .iter()
            .map(|&f| self.link.fields[f].transform.apply(rec.values[f].clone()))
            .collect()
    }

    fn base_values(&self, unit: usize, base: &BTreeMap<Name, Value>) -> Option<Vec<Value>> {
        self.link.units[unit]
            .fields
            .iter()
            .map(|&f| base.get(&self.link.fields[f].name).cloned())
            .collect()
    }

    /// Every field of `rec` (a record of `side`) by its column there, as read: what a
    /// conditional write or delete expects the row still to hold.
    fn as_read(&self, side: Side, rec: &Record) -> Vec<(Name, Value)> {
        // As the system holds them, not as translated (see `translate`).
        let values = rec.raw.as_ref().unwrap_or(&rec.values);
        let mut read: Vec<(Name, Value)> = Vec::with_capacity(self.link.fields.len());
        for (i, v) in values.iter().enumerate().take(self.link.fields.len()) {
            let column = self.link.field_column(i, side);
            // A composed column is expected once.
            if !read.iter().any(|(c, _)| c == column) {
                read.push((column.clone(), v.clone()));
            }
        }
        read
    }

    /// A unit's base as `side`'s system holds it: its held value where it has one.
    fn side_base(
        &self,
        unit: usize,
        base: &BTreeMap<Name, Value>,
        held: &Held,
        side: Side,
    ) -> Option<Vec<Value>> {
        self.link.units[unit]
            .fields
            .iter()
            .map(|&f| {
                let name = &self.link.fields[f].name;
                let shared = base.get(name)?;
                Some(held[side_index(side)].get(name).unwrap_or(shared).clone())
            })
            .collect()
    }

    fn side_bases(&self, unit: usize, plan: &PairPlan) -> Option<[Vec<Value>; 2]> {
        Some([
            self.side_base(unit, &plan.base, &plan.held, Side::Left)?,
            self.side_base(unit, &plan.base, &plan.held, Side::Right)?,
        ])
    }

    fn match_key(&self, rec: &Record) -> Option<String> {
        if self.link.match_on.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for &f in &self.link.match_on {
            let v = self.link.fields[f].transform.apply(rec.values[f].clone());
            if v.is_empty() {
                return None;
            }
            parts.push(match v {
                Value::Text(t) => t.trim().to_lowercase(),
                other => other.to_string(),
            });
        }
        Some(parts.join("\u{1f}"))
    }

    /// The first half of a left batch: its pairs, and the right keys to fetch.
    fn left_lookup(&mut self, records: Vec<Record>) -> Result<(LeftBatch, Vec<Key>), Error> {
        let keys: Vec<String> = records.iter().map(|r| r.key.encode()).collect();
        let pairs = self.state.pairs_by(&self.link.name, Side::Left, &keys)?;
        self.left_pairs_read += pairs.len() as u64;
        // Only linked keys matter to delete detection; unlinked ones are staged anyway.
        let linked: Vec<String> = pairs.keys().cloned().collect();
        self.state.mark_seen(Side::Left, &linked)?;
        let mut right_keys = Vec::new();
        for p in pairs.values().filter(|p| p.tombstone.is_none()) {
            right_keys.push(
                Key::decode(&p.right_key)
                    .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?,
            );
        }
        let batch = LeftBatch {
            records,
            keys,
            pairs,
        };
        Ok((batch, right_keys))
    }

    /// The second half: every record merged with its partner, or planned without one.
    fn left_merge(&mut self, batch: LeftBatch, partners: Vec<Record>) -> Result<(), Error> {
        let LeftBatch {
            records,
            keys,
            mut pairs,
        } = batch;
        self.partners_fetched += partners.len() as u64;
        let (partners, bad) = sort_out_fetched(partners);
        let left_alone: HashSet<String> = bad.iter().map(|b| b.key.encode()).collect();
        self.keep_out(Side::Right, bad)?;
        let mut unlinked = Vec::new();
        for (rec, key) in records.into_iter().zip(&keys) {
            // Taken out of the map: the plan takes the pair's base and marks as they are.
            match pairs.remove(key) {
                None => unlinked.push(self.unlinked(Side::Left, rec)),
                Some(p) if p.tombstone.is_some() => {}
                Some(p) if left_alone.contains(&p.right_key) => {}
                Some(p) => match partners.get(&p.right_key) {
                    Some(partner) => self.plan_pair(&rec, partner, Some(p), None)?,
                    None => self.plan_deleted(Side::Right, &rec, p)?,
                },
            }
        }
        Ok(self.state.stage_unlinked(Side::Left, &unlinked)?)
    }

    /// `left`: to confirm by a fetch that a left record a listing without a snapshot
    /// did not deliver is really gone.
    fn right_batch(&mut self, records: Vec<Record>, left: &mut dyn Connector) -> Result<(), Error> {
        let keys: Vec<String> = records.iter().map(|r| r.key.encode()).collect();
        // The left scan already merged every pair whose left record exists; here only
        // the pairs whose left record is gone need their full row.
        let links = self.state.right_links(&self.link.name, &keys)?;
        let linked: Vec<String> = links.keys().cloned().collect();
        self.state.mark_seen(Side::Right, &linked)?;
        let mut unlinked = Vec::new();
        for (rec, key) in records.into_iter().zip(&keys) {
            match links.get(key) {
                None => unlinked.push(self.unlinked(Side::Right, rec)),
                Some(link) if link.tombstoned || link.left_seen => {}
                Some(_) => {
                    let mut pair = self.state.pairs_by(
                        &self.link.name,
                        Side::Right,
                        std::slice::from_ref(key),
                    )?;
                    if let Some(p) = pair.remove(key) {
                        // A listing without a snapshot may have missed it (a page that
                        // shifted): only a fetch that finds nothing says it is gone.
                        let still_there = if left.capabilities().snapshot {
                            None
                        } else {
                            let k = Key::decode(&p.left_key)
                                .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
                            left.fetch(&self.layout.left, &[k])?.into_iter().next()
                        };
                        match still_there {
                            Some(l) => self.plan_pair(&l, &rec, Some(p), None)?,
                            None => self.plan_deleted(Side::Left, &rec, p)?,
                        }
                    }
                }
            }
        }
        Ok(self.state.stage_unlinked(Side::Right, &unlinked)?)
    }

    /// A record with no pair, as it waits in the scratch tables to be matched.
    fn unlinked(&self, side: Side, rec: Record) -> Unlinked {
        Unlinked {
            match_key: self.match_key(&rec),
            ext_ref: self.layout.ext_ref_of(side, &rec),
            key: rec.key,
            values: rec.values,
        }
    }

    /// Forgets pairs neither of whose records was listed; where a side's listing has no
    /// snapshot, only once a fetch confirms its record is gone.
    fn forget_vanished_pairs(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<(), Error> {
        let unsure = !left.capabilities().snapshot || !right.capabilities().snapshot;
        for left_key in self.state.pairs_with_nothing_left(&self.link.name)? {
            let key = Key::decode(&left_key)
                .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
            if unsure {
                let pair = self
                    .state
                    .pairs_by(&self.link.name, Side::Left, std::slice::from_ref(&left_key))?
                    .remove(&left_key);
                let right_key = pair
                    .map(|p| Key::decode(&p.right_key))
                    .transpose()
                    .map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
                let left_there = !left.capabilities().snapshot
                    && !left
                        .fetch(&self.layout.left, std::slice::from_ref(&key))?
                        .is_empty();
                let right_there = !right.capabilities().snapshot
                    && right_key.is_some_and(|k| {
                        right
                            .fetch(&self.layout.right, &[k])
                            .is_ok_and(|found| !found.is_empty())
                    });
                if left_there || right_there {
                    // Missed by a listing: seen again by the next run.
                    continue;
                }
            }
            let mut plan = PairPlan::new(Some(key), None, Fate::Forget, None);
            plan.state_changes.push(Change {
                side: Side::Right,
                op: "forget".into(),
                field: None,
                old: None,
                new: None,
                reason: "both records are gone".into(),
            });
            self.stage(plan)?;
        }
        Ok(())
    }

    fn match_and_create(&mut self) -> Result<(), Error> {
        let by_refs = self.link.left_ref.is_some()
            || self.link.right_ref.is_some()
            || self.layout.key_carried;
        let ambiguous = self.state.match_unlinked(by_refs)?;
        let mut by_key: BTreeMap<String, Vec<(Side, String)>> = BTreeMap::new();
        for (side, key, match_key) in ambiguous {
            by_key.entry(match_key).or_default().push((side, key));
        }
        for members in by_key.values() {
            let names: Vec<String> = members
                .iter()
                .map(|(s, k)| {
                    format!(
                        "{s}:{}",
                        Key::decode(k).map(|k| k.display_text()).unwrap_or_default()
                    )
                })
                .collect();
            for (side, key) in members {
                self.quarantine(*side, key, "", QuarantineKind::AmbiguousMatch, format!(
                    "match key is shared by {} records ({}); fix the duplicates, syncline will not guess",
                    members.len(),
                    names.join(", ")
                ))?;
            }
        }
        let page = self.link.batch_size;
        let mut after = 0;
        loop {
            let matched = self.state.matched_page(after, page)?;
            let Some(last) = matched.last() else { break };
            after = last.0;
            for (_, l, r, how) in matched {
                let (l, r) = (Record::new(l.key, l.values), Record::new(r.key, r.values));
                self.plan_pair(&l, &r, None, Some(&how))?;
            }
        }
        let creates: &[Side] = match self.link.mode {
            Mode::OneWay => &[Side::Left],
            Mode::TwoWay => &[Side::Left, Side::Right],
        };
        for &from in creates {
            let mut after = 0;
            loop {
                let records = self.state.unmatched_page(from, after, page)?;
                let Some(last) = records.last() else { break };
                after = last.0;
                for (_, rec) in records {
                    self.plan_create(from, Record::new(rec.key, rec.values), None)?;
                }
            }
        }
        Ok(())
    }

    fn quarantine(
        &mut self,
        side: Side,
        key: &str,
        field: &str,
        kind: QuarantineKind,
        reason: String,
    ) -> Result<(), Error> {
        self.report.quarantined += 1;
        if let Some(_run) = self.run_id {
            self.state.put_quarantine(
                &QuarantineRow {
                    link: self.link.name.clone(),
                    side,
                    key: key.to_string(),
                    field: field.to_string(),
                    kind,
                    reason,
                    detected_run: self.run_seq,
                },
                self.run_seq,
            )?;
        }
        Ok(())
    }

    fn rule(&self, unit: usize) -> UnitRule {
        let u = &self.link.units[unit];
        UnitRule {
            owner: u.owner,
            policy: self.link.policy_of(u),
            mode: self.link.mode,
            on_drift: self.link.on_drift,
        }
    }

    fn clocks(&self, unit: usize, l: &Record, r: &Record) -> Clocks {
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
    fn plan_pair(
        &mut self,
        l: &Record,
        r: &Record,
        pair: Option<PairRow>,
        matched_by: Option<&str>,
    ) -> Result<(), Error> {
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
                && translate::needs_translation(self.link)
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
                    if old.same_meaning(&target[i]) || sets[idx].iter().any(|(c, _)| *c == col) {
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
    fn unchanged_as_read(
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

    fn count_echo(&mut self, marks: &BTreeMap<String, Mark>, unit: &str, value: &[Value]) {
        if let Some(m) = marks.get(unit)
            && m.run == self.run_seq - 1
            && m.hash == hash_values(value)
        {
            self.report.echoes_suppressed += 1;
        }
    }

    /// A person's resolution of this unit's conflict, if it still applies (both sides
    /// hold what they held when the conflict was found).
    fn resolution(
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
    fn record_conflict(
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

    /// Creates `rec` (from side `from`) on the other side. With `replacing`, the pair
    /// already exists and gets the new record (a delete-vs-edit won by the edit).
    fn plan_create(
        &mut self,
        from: Side,
        rec: Record,
        replacing: Option<&PairRow>,
    ) -> Result<(), Error> {
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
        if to == Side::Left && translate::needs_translation(self.link) {
            for (u, unit) in self.link.units.iter().enumerate() {
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
    fn plan_deleted(
        &mut self,
        deleted_on: Side,
        survivor: &Record,
        pair: PairRow,
    ) -> Result<(), Error> {
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

    fn stage(&mut self, plan: PairPlan) -> Result<(), Error> {
        for side_changes in plan.changes.iter() {
            for c in side_changes {
                self.report.planned_total += 1;
                if self.report.planned.len() < self.list_limit {
                    let key = match c.side {
                        Side::Left => plan.left_key.as_ref().map(|k| format!("left:{k}")),
                        Side::Right => plan.right_key.as_ref().map(|k| format!("right:{k}")),
                    }
                    .unwrap_or_else(|| {
                        match (&plan.left_key, &plan.right_key) {
                            (Some(k), _) => format!("(new, from left:{k})"),
                            (_, Some(k)) => format!("(new, from right:{k})"),
                            _ => String::new(),
                        }
                    });
                    self.report.planned.push(PlannedLine {
                        side: c.side,
                        op: c.op.to_string(),
                        key,
                        field: c.field.clone(),
                        old: c.old.as_ref().map(Value::to_json),
                        new: c.new.as_ref().map(Value::to_json),
                        reason: c.reason.to_string(),
                    });
                }
            }
        }
        if let Some(buffer) = &mut self.buffer {
            buffer.push(plan);
            return Ok(());
        }
        // `plan` never applies: counting and listing is all it needs.
        if self.run_id.is_none() {
            return Ok(());
        }
        let body = serde_json::to_string(&plan).expect("plans serialize");
        Ok(self.state.stage_plan(&body)?)
    }
}
