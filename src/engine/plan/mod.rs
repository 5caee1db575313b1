//! Planning: read both sides, resolve identity, merge every unit of every pair, and stage
//! the resulting [`PairPlan`]s. Writes nothing to any system; in a `run` it records the
//! conflicts and quarantine findings it makes.

mod changed;
mod lifecycle;

pub(crate) use changed::ChangedRead;
mod merge_pair;
mod streamed;

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
    /// Its partners are assumed as the base says they are, not fetched (see `streamed`).
    assumed: bool,
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
    /// Per unit: its values mean something else on the left (see `translate`), so a
    /// write there is checked to survive the way back.
    translated: Vec<bool>,
    conflicts: HashMap<String, HashMap<String, ConflictRow>>,
    /// During a streamed first load, plans collect here and are applied batch by batch
    /// instead of being staged.
    pub(super) buffer: Option<Vec<PairPlan>>,
    /// Pairs whose left record the left scan read: with the right partners it fetched
    /// (`report.partners_fetched`), what tells whether the right scan can find anything.
    left_pairs_read: u64,
    /// Per side: the furthest cursor value its read saw (see `observe`).
    cursor_seen: [Option<Value>; 2],
    /// Records staged with no pair, this cycle.
    unlinked_staged: u64,
    /// In a cycle that reads what changed, the keys of those records, per side (up to
    /// [`changed::UNLINKED_KEYS`]; `None` past that, or in a full read).
    pub(super) unlinked_keys: Option<[Vec<Key>; 2]>,
    /// `Some` for `verify`: pairs are compared side to side, and nothing is planned.
    pub(crate) verify: Option<Box<super::report::LinkDrift>>,
    /// `Some(n)` while a full read should note every n-th key of each side: the bounds
    /// of key ranges for digests.
    pub(crate) bounds_every: Option<u64>,
    bounds_count: [u64; 2],
    bounds_seen: [Vec<Key>; 2],
    /// Per side, ranges a reconciliation found grown, with the keys to split them at.
    pub(crate) splits: [Vec<(usize, Vec<Key>)>; 2],
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
            translated: translate::translated_units(link),
            left_pairs_read: 0,
            cursor_seen: [None, None],
            unlinked_staged: 0,
            unlinked_keys: None,
            verify: None,
            bounds_every: None,
            bounds_count: [0, 0],
            bounds_seen: [Vec::new(), Vec::new()],
            splits: [Vec::new(), Vec::new()],
        })
    }

    /// Whether this is a first load into an empty collection: nothing to link, match or
    /// delete, so every left record is a create planned straight from the scan (see
    /// `first_load`).
    pub(crate) fn is_first_load(&mut self, right: &mut dyn Connector) -> Result<bool, Error> {
        Ok(!self.state.has_pairs(&self.link.name)? && right.is_empty(&self.layout.right)?)
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
        let left_records = self.read_left(left, right, &left_spec)?;
        self.report.left_records = left_records;
        // The right scan looks for two things: records no pair holds, and pairs whose
        // left record is gone. If the left scan read every pair's left record and the
        // right holds exactly the partners it fetched, there are neither: counted, not
        // assumed, and any difference runs the scan.
        let pairs = self.state.pair_count(&self.link.name)?;
        let every_left_read = u64::try_from(pairs).is_ok_and(|n| n == self.left_pairs_read);
        // A right read by cursor is scanned in full reads, for the cursor's position.
        let right_cursor =
            self.layout.cursor[side_index(Side::Right)].is_some() || self.bounds_every.is_some();
        if every_left_read
            && !right_cursor
            && right.count(&right_spec)? == Some(self.report.partners_fetched)
        {
            self.report.right_records = self.report.partners_fetched;
        } else {
            let right_records = scan_ahead(right, &right_spec, batch, &mut |records, bad| {
                self.observe(Side::Right, &records);
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

    /// The left half of a read: each batch of `left_spec`'s records looked up, its
    /// partners fetched from the right, merged. Returns how many records were read.
    pub(super) fn read_left(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        left_spec: &crate::connectors::ReadSpec,
    ) -> Result<u64, Error> {
        let batch = self.link.batch_size;
        let right_spec = self.layout.right.clone();
        // The left scan reads ahead on one thread and fetches each batch's partners from
        // the right on another, while this one merges the batch before; the right scan
        // only consults the state store.
        std::thread::scope(|scope| -> Result<u64, Error> {
            let (fetch_from, fetch_spec) = (&mut *right, &right_spec);
            let mut fetcher = OneBehind::start(scope, move |keys: Vec<Key>| {
                fetch_from.fetch(fetch_spec, &keys)
            });
            let scanned = scan_ahead(left, left_spec, batch, &mut |records, bad| {
                let Some((looked_up, partner_keys)) = self.look_up_left(records, bad)? else {
                    return Ok(());
                };
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
        })
    }

    /// The key range bounds each side's full read noted; `None` for a side it did not
    /// read (a first load reads only the left).
    pub(crate) fn take_bounds(&mut self) -> [Option<Vec<Key>>; 2] {
        let seen = std::mem::take(&mut self.bounds_seen);
        let [l, r] = seen;
        [
            (self.bounds_count[0] > 0).then_some(l),
            (self.bounds_count[1] > 0).then_some(r),
        ]
    }

    /// Keeps the furthest cursor value `side`'s read has seen (see `[changes]`).
    pub(super) fn observe(&mut self, side: Side, records: &[Record]) {
        crate::engine::progress::report(crate::engine::progress::Progress::Read(
            side,
            records.len() as u64,
        ));
        if let Some(every) = self.bounds_every {
            // Every `every`-th key read starts a key range (see `[changes]` digests).
            let i = side_index(side);
            for r in records {
                if self.bounds_count[i] > 0 && self.bounds_count[i].is_multiple_of(every) {
                    self.bounds_seen[i].push(r.key.clone());
                }
                self.bounds_count[i] += 1;
            }
        }
        let Some(at) = self.layout.cursor[side_index(side)] else {
            return;
        };
        let seen = &mut self.cursor_seen[side_index(side)];
        for r in records {
            let v = &r.values[at];
            if seen
                .as_ref()
                .is_none_or(|s| v.cursor_cmp(s).is_some_and(|o| o.is_gt()))
                && *v != Value::Null
            {
                *seen = Some(v.clone());
            }
        }
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
    pub(super) fn unit_values(&self, unit: usize, rec: &Record) -> Vec<Value> {
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
        for ((i, v), f) in values.iter().enumerate().zip(&self.link.fields) {
            let column = self.link.field_column(i, side);
            // A composed column is expected once.
            if !(f.composed && read.iter().any(|(c, _)| c == column)) {
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

    /// A left batch as read: noted, its bad records kept out, its pairs looked up (in one
    /// state transaction); `None` when it held only bad records.
    fn look_up_left(
        &mut self,
        records: Vec<Record>,
        bad: Vec<BadKey>,
    ) -> Result<Option<(LeftBatch, Vec<Key>)>, Error> {
        self.observe(Side::Left, &records);
        if records.is_empty() {
            self.in_transaction(|p| p.keep_out(Side::Left, bad))?;
            return Ok(None);
        }
        self.in_transaction(|p| {
            p.keep_out(Side::Left, bad)?;
            p.left_lookup(records).map(Some)
        })
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
            assumed: false,
        };
        Ok((batch, right_keys))
    }

    /// The second half: every record merged with its partner, or planned without one.
    fn left_merge(&mut self, batch: LeftBatch, partners: Vec<Record>) -> Result<(), Error> {
        let LeftBatch {
            records,
            keys,
            mut pairs,
            assumed,
        } = batch;
        if !assumed {
            self.report.partners_fetched += partners.len() as u64;
        }
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
        self.note_unlinked(Side::Left, &unlinked);
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
            self.forget_pair(key)?;
        }
        Ok(())
    }

    /// Forgets the pair of `left_key`: both its records are gone.
    pub(super) fn forget_pair(&mut self, left_key: Key) -> Result<(), Error> {
        let mut plan = PairPlan::new(Some(left_key), None, Fate::Forget, None);
        plan.state_changes.push(Change {
            side: Side::Right,
            op: "forget".into(),
            field: None,
            old: None,
            new: None,
            reason: "both records are gone".into(),
        });
        self.stage(plan)
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

    fn stage(&mut self, plan: PairPlan) -> Result<(), Error> {
        if self.verify.is_some() {
            return Ok(());
        }
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
