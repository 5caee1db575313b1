//! Applying a staged plan, batch by batch: journal → write → commit.

use super::io::LinkIo;
use super::pair_plan::{Fate, PairPlan};
use super::report::LinkReport;
use crate::Error;
use crate::config::LinkSpec;
use crate::config::Owner;
use crate::connectors::{BatchResult, ConnectorError, Write, WriteOutcome};
use crate::model::{Key, Name, Record, Side, Value};
use crate::state::{
    Change, EncodedPair, Held, JournalRange, QuarantineRow, StateError, StateStore,
};
use std::collections::BTreeMap;

pub(crate) fn apply_plan(
    link: &LinkSpec,
    io: &mut LinkIo,
    state: &mut StateStore,
    run: i64,
    run_seq: i64,
    report: &mut LinkReport,
) -> Result<(), Error> {
    let mut after = 0;
    loop {
        super::stop_requested()?;
        let page = state.plan_page(after, link.batch_size)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        let plans = page
            .iter()
            .map(|(_, body)| serde_json::from_str::<PairPlan>(body))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Corrupt(format!("staged plan: {e}")))?;
        let mut write = |side: Side, writes: &[Write]| {
            let spec = io.layout.read_spec(side).clone();
            io.connector(side).apply(&spec, writes)
        };
        apply_batch(link, &mut write, state, run, run_seq, report, plans)?;
    }
    Ok(())
}

/// Takes the staged plans' writes back out of `report`'s counts: a cycle that is planned
/// again (a partial read that needs a full one) counts only what it already wrote.
pub(crate) fn uncount_staged(state: &mut StateStore, report: &mut LinkReport) -> Result<(), Error> {
    let mut after = 0;
    loop {
        let page = state.plan_page(after, 1000)?;
        let Some(last) = page.last() else { break };
        after = last.0;
        for (_, body) in &page {
            let plan: PairPlan = serde_json::from_str(body)
                .map_err(|e| StateError::Corrupt(format!("staged plan: {e}")))?;
            for side in [Side::Left, Side::Right] {
                if plan.writes[side as usize].is_some() {
                    decrement(report.direction(side), &plan, side as usize);
                }
            }
        }
    }
    Ok(())
}

/// Sends writes for one side to its system.
pub(crate) type Writer<'a> = dyn FnMut(Side, &[Write]) -> Result<BatchResult, ConnectorError> + 'a;

/// One batch: journal it as planned, write it, commit what the systems confirmed.
pub(crate) fn apply_batch(
    link: &LinkSpec,
    write: &mut Writer<'_>,
    state: &mut StateStore,
    run: i64,
    run_seq: i64,
    report: &mut LinkReport,
    plans: Vec<PairPlan>,
) -> Result<(), Error> {
    let mut batch = PlannedBatch::journal(link, state, run, plans)?;
    crate::fault::point("after_journal");
    for side in [Side::Left, Side::Right] {
        let mut lent = batch.lend_writes(side);
        if lent.writes.is_empty() {
            continue;
        }
        let results = write_out(link, side, &mut lent.writes, |w| write(side, w));
        batch.settle(lent, results)?;
    }
    let refusal = batch.commit(link, state, run_seq, report)?;
    crate::fault::point("after_store_commit");
    match refusal {
        Some(why) => Err(Error::Refused(why)),
        None => Ok(()),
    }
}

/// The fewest writes a batch must have for all of them refused for one reason to stop
/// the link (see [`PlannedBatch::systematic_refusal`]).
pub(crate) const SYSTEMATIC_AT_LEAST: usize = 20;

/// A batch journaled as `planned`: its writes go out to the systems, and what they
/// confirm is committed to the state store.
pub(crate) struct PlannedBatch {
    /// Where the batch's entries are in the journal.
    journaled: JournalRange,
    plans: Vec<PairPlan>,
    /// The keys each pair's entries were journaled under.
    keys: Vec<(Option<String>, Option<String>)>,
    outcomes: Vec<[Option<WriteOutcome>; 2]>,
    /// Each pair's created record's state (see [`write_out`]).
    created: Vec<Option<Created>>,
    /// Each pair's updated fields as each side's system stored them (see [`write_out`]).
    stored: Vec<[StoredFields; 2]>,
}

/// What a system said of a side's lent writes, by write: the outcomes, each created
/// record's state, and each update's fields as the system stored them.
pub(crate) struct WriteResults {
    pub outcomes: Result<Vec<WriteOutcome>, ConnectorError>,
    pub created: Vec<Option<Created>>,
    pub stored: Vec<StoredFields>,
}

impl WriteResults {
    /// What a side said of no writes at all.
    pub fn none() -> WriteResults {
        WriteResults {
            outcomes: Ok(Vec::new()),
            created: Vec::new(),
            stored: Vec::new(),
        }
    }
}

/// A record syncline created, as the pair will remember it.
pub(crate) struct Created {
    /// The pair's base, encoded as the store keeps it: the values the create sent.
    pub base: String,
    /// Held values, encoded: what the receiver stored where it is not what was sent.
    pub held: Option<String>,
    /// Fields the receiver filled (or, owning them, rewrote) that flow back to the
    /// sending side in this run: (field, value stored, sender's value). Their base
    /// waits for that write.
    pub flow_back: Vec<(usize, Value, Value)>,
    /// The base and held values unencoded, only when something flows back.
    pub decoded: Option<(BTreeMap<Name, Value>, Held)>,
}

/// Sends `writes` to side `to` through `apply`, then works out from what the system
/// stored (read back in its transaction) what the pair remembers: for an update, the
/// written record's fields as stored (normalized by their transforms); for a create,
/// its base (the values it sent), what the receiver holds where that differs (a
/// trigger, a default, a rounding column), and what flows back (see [`Created`]). The
/// sent values are dropped here: a first load runs this on its writer's thread, which
/// has time to spare, instead of the planner's, which has none.
pub(crate) fn write_out(
    link: &LinkSpec,
    to: Side,
    writes: &mut [Write],
    apply: impl FnOnce(&[Write]) -> Result<BatchResult, ConnectorError>,
) -> WriteResults {
    let BatchResult { outcomes, stored } = match apply(writes) {
        Ok(result) => {
            crate::fault::point("after_receiver_commit");
            result
        }
        Err(e) => {
            return WriteResults {
                outcomes: Err(e),
                created: Vec::new(),
                stored: Vec::new(),
            };
        }
    };
    let mut created = Vec::with_capacity(writes.len());
    let mut updated = Vec::with_capacity(writes.len());
    for ((write, outcome), record) in writes.iter_mut().zip(&outcomes).zip(stored) {
        match (write, outcome) {
            (Write::Create { values }, WriteOutcome::Created(_)) => {
                created.push(Some(created_state(link, to, values, record.as_ref())));
                *values = Vec::new();
                updated.push(StoredFields::default());
            }
            (Write::Update { set, expect, .. }, _) => {
                created.push(None);
                updated.push(
                    record
                        .map(|r| stored_fields(link, to, set, expect, r))
                        .unwrap_or_default(),
                );
            }
            _ => {
                created.push(None);
                updated.push(Default::default());
            }
        }
    }
    WriteResults {
        outcomes: Ok(outcomes),
        created,
        stored: updated,
    }
}

/// An updated record as read back: the fields the write set, by name, as stored; and the
/// fields it did not set that the system changed with it, by name, as (read, stored).
/// All normalized by their transforms.
fn stored_fields(
    link: &LinkSpec,
    to: Side,
    set: &[(Name, Value)],
    expect: &[(Name, Value)],
    record: Record,
) -> StoredFields {
    let mut stored = StoredFields::default();
    for (i, (f, now)) in link.fields.iter().zip(record.values).enumerate() {
        let column = link.field_column(i, to);
        let now = f.transform.apply(now);
        if set.iter().any(|(c, _)| c == column) {
            stored.set.insert(f.name.clone(), now);
        } else if let Some((_, read)) = expect.iter().find(|(c, _)| c == column)
            // `expect` holds what the system held; a translated field's read value is
            // in another meaning than `now` (its change shows next run instead).
            && (f.meaning.is_same() && !f.composed)
        {
            let read = f.transform.apply(read.clone());
            if read != now {
                stored.side_effects.insert(f.name.clone(), (read, now));
            }
        }
    }
    stored
}

/// See [`stored_fields`].
#[derive(Default, Clone)]
pub(crate) struct StoredFields {
    pub set: BTreeMap<Name, Value>,
    pub side_effects: BTreeMap<Name, (Value, Value)>,
}

/// The owner of field `field` (its unit's).
fn field_owner(link: &LinkSpec, field: usize) -> Owner {
    link.units
        .iter()
        .find(|u| u.fields.contains(&field))
        .map_or(Owner::Left, |u| u.owner)
}

/// What a create to `to` leaves the pair with. A create sends the link's fields in
/// order, by their column on the receiving side, without NULLs (and then the external
/// id, which is no field).
fn created_state(
    link: &LinkSpec,
    to: Side,
    sent: &[(Name, Value)],
    stored: Option<&Record>,
) -> Created {
    let mut sent_values = sent.iter().peekable();
    let mut fields: Vec<(&str, &Value)> = Vec::with_capacity(link.fields.len());
    let mut held: Held = Default::default();
    let mut flow_back = Vec::new();
    let null = Value::Null;
    let receiver = match to {
        Side::Left => Owner::Left,
        Side::Right => Owner::Right,
    };
    for (i, f) in link.fields.iter().enumerate() {
        let column = link.field_column(i, to);
        // In order, as sent; a composed column is sent once for its several fields.
        let was_sent = match sent_values.next_if(|(c, _)| c == column) {
            Some((_, v)) => Some(v),
            None if f.composed => sent.iter().find(|(c, _)| c == column).map(|(_, v)| v),
            None => None,
        };
        let Some(stored) = stored.map(|r| f.transform.apply(r.values[i].clone())) else {
            // Not read back: the connector knows the record was stored exactly as sent
            // (a field left out is NULL there, no default filled it).
            fields.push((&f.name, was_sent.unwrap_or(&null)));
            continue;
        };
        let sent_value = was_sent.unwrap_or(&null);
        if stored == *sent_value {
            fields.push((&f.name, sent_value));
            continue;
        }
        let owner = field_owner(link, i);
        let filled = matches!(sent_value, Value::Null);
        // The receiver's own field (or both sides', where the sender had nothing) flows
        // back; a value it only rewrote stays its own form of the value sent (an echo).
        // A rewrite flows back only without a transform: the write back expects the
        // sender's value as read, which a transform changed on the way.
        if owner == receiver && (filled || f.is_verbatim()) || owner == Owner::Both && filled {
            flow_back.push((i, stored, sent_value.clone()));
            continue;
        }
        fields.push((&f.name, sent_value));
        held[to as usize].insert(f.name.clone(), stored);
    }
    // Decoded only for a flow-back (rare); the base is encoded for every create.
    let decoded = (!flow_back.is_empty()).then(|| {
        let map = fields
            .iter()
            .map(|(n, v)| (Name::from(*n), (*v).clone()))
            .collect();
        (map, held.clone())
    });
    let base = crate::state::encode_base_fields(fields);
    Created {
        base,
        held: crate::state::encode_held(&held),
        flow_back,
        decoded,
    }
}

/// One side's writes of a batch, lent out to its system and given back with the
/// outcomes: the commit reads what each write was.
pub(crate) struct LentWrites {
    side: Side,
    positions: Vec<usize>,
    pub writes: Vec<Write>,
}

impl PlannedBatch {
    /// Journals the batch as planned: if the process dies while writing, the next run
    /// sees these entries as `unknown` and re-plans from what the systems hold.
    pub fn journal(
        link: &LinkSpec,
        state: &mut StateStore,
        run: i64,
        plans: Vec<PairPlan>,
    ) -> Result<PlannedBatch, Error> {
        Ok(state.transaction(|s| Self::journal_in(link, s, run, plans))?)
    }

    /// [`journal`](Self::journal) inside the caller's state transaction.
    pub(crate) fn journal_in(
        link: &LinkSpec,
        s: &mut StateStore,
        run: i64,
        plans: Vec<PairPlan>,
    ) -> Result<PlannedBatch, StateError> {
        let keys: Vec<(Option<String>, Option<String>)> = plans.iter().map(keys).collect();
        let entries: Vec<(Option<&str>, Option<&str>, &crate::state::Change)> = plans
            .iter()
            .zip(&keys)
            .flat_map(|(p, (lk, rk))| {
                p.changes
                    .iter()
                    .flatten()
                    .map(move |c| (lk.as_deref(), rk.as_deref(), c))
            })
            .collect();
        let journaled = s.journal_planned_batch(run, &link.name, &entries)?;
        let outcomes = vec![[None, None]; plans.len()];
        Ok(PlannedBatch {
            journaled,
            created: std::iter::repeat_with(|| None).take(plans.len()).collect(),
            stored: vec![Default::default(); plans.len()],
            plans,
            keys,
            outcomes,
        })
    }

    /// Takes `side`'s writes out of the plans, to send to its system.
    pub(crate) fn lend_writes(&mut self, side: Side) -> LentWrites {
        let (positions, writes) = self
            .plans
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.writes[side as usize].take().map(|w| (i, w)))
            .unzip();
        LentWrites {
            side,
            positions,
            writes,
        }
    }

    /// Puts lent writes back with what the system said of them. A failed batch (the
    /// system could not be written at all) is the error; its entries stay `planned`.
    pub fn settle(
        &mut self,
        lent: LentWrites,
        results: WriteResults,
    ) -> Result<(), ConnectorError> {
        let idx = lent.side as usize;
        for (&pos, w) in lent.positions.iter().zip(lent.writes) {
            self.plans[pos].writes[idx] = Some(w);
        }
        for (&pos, created) in lent.positions.iter().zip(results.created) {
            if created.is_some() {
                self.created[pos] = created;
            }
        }
        for (&pos, stored) in lent.positions.iter().zip(results.stored) {
            self.stored[pos][idx] = stored;
        }
        for (pos, outcome) in lent.positions.into_iter().zip(results.outcomes?) {
            self.outcomes[pos][idx] = Some(outcome);
        }
        Ok(())
    }

    /// Whether a side refused every write of this batch for one and the same reason (a
    /// NOT NULL column no field fills, a trigger that refuses everything): then every
    /// other batch would be refused too, and replaying each record alone to find the
    /// culprit only costs time. Batches of fewer than [`SYSTEMATIC_AT_LEAST`] writes
    /// are left to the per-record path.
    fn systematic_refusal(&self, link: &LinkSpec) -> Option<String> {
        for side in [Side::Left, Side::Right] {
            let mut reasons = self
                .outcomes
                .iter()
                .filter_map(|o| o[side as usize].as_ref());
            let Some(WriteOutcome::Rejected(first)) = reasons.next() else {
                continue;
            };
            let mut count = 1;
            let mut same = true;
            for outcome in reasons {
                count += 1;
                same &= matches!(outcome, WriteOutcome::Rejected(r) if r == first);
            }
            if same && count >= SYSTEMATIC_AT_LEAST {
                return Some(format!(
                    "link `{}`: {} refused all {count} writes of a batch for one reason: {first}. The link stopped there instead of trying every record (this batch's records are quarantined with the reason); fix the cause, then run again",
                    link.name,
                    link.endpoint(side).label()
                ));
            }
        }
        None
    }

    /// Commits what the systems confirmed, in one transaction. Entries that did not
    /// apply are marked one by one; the rest of the batch's entries become `applied` in
    /// one statement, and the pairs are written many per statement. Returns why the link
    /// must stop there, when a side refused the whole batch for one reason (see
    /// [`systematic_refusal`](Self::systematic_refusal)): committed first, so the refused
    /// records are quarantined with their reason.
    pub fn commit(
        self,
        link: &LinkSpec,
        state: &mut StateStore,
        run_seq: i64,
        report: &mut LinkReport,
    ) -> Result<Option<String>, Error> {
        Ok(state.transaction(|s| self.commit_in(link, s, run_seq, report))?)
    }

    /// [`commit`](Self::commit) inside the caller's state transaction.
    pub(crate) fn commit_in(
        self,
        link: &LinkSpec,
        s: &mut StateStore,
        run_seq: i64,
        report: &mut LinkReport,
    ) -> Result<Option<String>, StateError> {
        crate::fault::point("before_store_commit");
        let refusal = self.systematic_refusal(link);
        let PlannedBatch {
            journaled,
            plans,
            keys,
            outcomes,
            created,
            stored,
        } = self;
        let mut puts = PendingPairs::default();
        super::progress::report(super::progress::Progress::Written(plans.len() as u64));
        let pairs = plans.into_iter().zip(outcomes).zip(created).zip(stored);
        for ((((plan, outcome), created), stored), planned) in pairs.zip(&keys) {
            let at = Journaled {
                range: journaled,
                keys: planned,
            };
            let outcome = (outcome, created, stored);
            commit_pair(link, s, at, run_seq, report, plan, outcome, &mut puts)?;
        }
        puts.flush(s, &link.name)?;
        let applied: Vec<_> = puts
            .applied
            .iter()
            .map(|(lk, rk, c)| (lk.as_deref(), rk.as_deref(), c))
            .collect();
        s.journal_batch(journaled.run, &link.name, &applied, "applied")?;
        s.journal_applied_within(journaled)?;
        Ok(refusal)
    }
}

/// Commits written batches, in order, inside the caller's state transaction (see
/// [`PlannedBatch::commit_in`]); returns the first reason a side refused one whole.
pub(crate) fn commit_batches_in(
    link: &LinkSpec,
    s: &mut StateStore,
    run_seq: i64,
    report: &mut LinkReport,
    batches: impl IntoIterator<Item = PlannedBatch>,
) -> Result<Option<String>, StateError> {
    let mut refusal = None;
    for batch in batches {
        let why = batch.commit_in(link, s, run_seq, report)?;
        refusal = refusal.or(why);
    }
    Ok(refusal)
}

/// Where a pair's planned entries are in the journal: its batch's range, and the keys
/// they were journaled under.
#[derive(Clone, Copy)]
struct Journaled<'a> {
    range: JournalRange,
    keys: &'a (Option<String>, Option<String>),
}

/// Pair rows to write at the end of the batch's commit, in multi-row statements, and the
/// state-only changes (links, unlinks) to journal as applied.
#[derive(Default)]
struct PendingPairs {
    rows: Vec<EncodedPair>,
    /// Pairs of records this batch created: no stored pair keeps their right key.
    new_rows: Vec<EncodedPair>,
    /// Fingerprints of the pending rows' left keys: a collision only costs an early flush.
    left_keys: std::collections::HashSet<u64>,
    applied: Vec<(Option<String>, Option<String>, crate::state::Change)>,
}

impl PendingPairs {
    fn put(&mut self, s: &mut StateStore, link: &str, row: EncodedPair) -> Result<(), StateError> {
        self.admit(s, link, &row.left_key)?;
        self.rows.push(row);
        Ok(())
    }

    /// [`put`](Self::put) for the pair of a record this batch created.
    fn put_new(
        &mut self,
        s: &mut StateStore,
        link: &str,
        row: EncodedPair,
    ) -> Result<(), StateError> {
        self.admit(s, link, &row.left_key)?;
        self.new_rows.push(row);
        Ok(())
    }

    /// One statement cannot upsert a row twice: a repeated key goes in the next one.
    fn admit(&mut self, s: &mut StateStore, link: &str, left_key: &str) -> Result<(), StateError> {
        let fingerprint = xxhash_rust::xxh3::xxh3_64(left_key.as_bytes());
        if !self.left_keys.insert(fingerprint) {
            self.flush(s, link)?;
            self.left_keys.insert(fingerprint);
        }
        Ok(())
    }

    /// Writes what is pending; a delete of a pair must come after this.
    fn flush(&mut self, s: &mut StateStore, link: &str) -> Result<(), StateError> {
        s.put_pairs(link, &self.rows)?;
        s.put_new_pairs(link, &self.new_rows)?;
        self.rows.clear();
        self.new_rows.clear();
        self.left_keys.clear();
        Ok(())
    }
}

fn keys(p: &PairPlan) -> (Option<String>, Option<String>) {
    (
        p.left_key.as_ref().map(|k| k.encode()),
        p.right_key.as_ref().map(|k| k.encode()),
    )
}

#[allow(clippy::too_many_arguments)]
fn commit_pair(
    link: &LinkSpec,
    s: &mut StateStore,
    at: Journaled<'_>,
    run_seq: i64,
    report: &mut LinkReport,
    mut plan: PairPlan,
    (outcomes, mut created, stored): (
        [Option<WriteOutcome>; 2],
        Option<Created>,
        [StoredFields; 2],
    ),
    puts: &mut PendingPairs,
) -> Result<(), StateError> {
    let (mut left_key, mut right_key) = at.keys.clone();
    let mut all_confirmed = true;
    let mut updated = [false; 2];
    for side in [Side::Left, Side::Right] {
        let idx = side as usize;
        let Some(outcome) = &outcomes[idx] else {
            continue;
        };
        let status = match outcome {
            WriteOutcome::Created(k) => {
                match side {
                    Side::Left => left_key = Some(k.encode()),
                    Side::Right => right_key = Some(k.encode()),
                }
                "applied"
            }
            WriteOutcome::Applied => {
                updated[idx] = true;
                let marks = std::mem::take(&mut plan.marks_if[idx]);
                plan.marks.extend(marks);
                "applied"
            }
            // Planned against a partner assumed as the base says it is: not a write
            // someone else's edit made stale yet, but a guess that missed. Decided again
            // from both records as they are, in this cycle (see `plan::streamed`).
            WriteOutcome::Stale if plan.assumed => {
                all_confirmed = false;
                decrement(report.direction(side), &plan, idx);
                report.decide_again.extend(plan.left_key.clone());
                "stale"
            }
            WriteOutcome::Stale => {
                all_confirmed = false;
                let counts = report.direction(side);
                decrement(counts, &plan, idx);
                counts.stale_skipped += 1;
                "stale"
            }
            // Only a create is left unknown (see `adapt`): not recorded as a pair; if it
            // landed, the next run finds it by the link's create identity.
            WriteOutcome::Unknown(_) => {
                all_confirmed = false;
                decrement(report.direction(side), &plan, idx);
                "unknown"
            }
            WriteOutcome::Rejected(reason) => {
                all_confirmed = false;
                let counts = report.direction(side);
                decrement(counts, &plan, idx);
                counts.rejected += 1;
                // Quarantine under the record the person will look for: the target if it
                // exists, else the source of a create.
                let (q_side, q_key) = match (side, &left_key, &right_key) {
                    (Side::Left, Some(k), _) => (Side::Left, k.clone()),
                    (Side::Right, _, Some(k)) => (Side::Right, k.clone()),
                    (_, Some(k), None) => (Side::Left, k.clone()),
                    (_, _, Some(k)) => (Side::Right, k.clone()),
                    _ => (side, String::new()),
                };
                s.put_quarantine(
                    &QuarantineRow {
                        link: link.name.clone(),
                        side: q_side,
                        key: q_key,
                        field: String::new(),
                        kind: crate::state::QuarantineKind::Rejected,
                        reason: format!("the {side} refused the write: {reason}"),
                        detected_run: run_seq,
                    },
                    run_seq,
                )?;
                "rejected"
            }
        };
        // Applied entries are marked with the whole batch; a created record's new key is
        // found through the id map (`log` and `explain` look there), so no row is touched.
        if status != "applied" && !plan.changes[idx].is_empty() {
            s.journal_outcome(
                at.range,
                &link.name,
                side,
                (at.keys.0.as_deref(), at.keys.1.as_deref()),
                status,
            )?;
        }
    }

    let [left_stored, right_stored] = stored;
    plan.settle(
        updated,
        &[left_stored.set, right_stored.set],
        &[left_stored.side_effects, right_stored.side_effects],
    );
    // Called once, whichever the fate. A created record's base is the one its create
    // sent, encoded already (see `write_out`), and is taken, not copied.
    let mut flow_back = None;
    let mut row = |base: &BTreeMap<_, _>, marks: &BTreeMap<_, _>, tombstone| match created.take() {
        Some(c) => {
            flow_back = c.decoded.map(|d| (d, c.flow_back));
            EncodedPair {
                left_key: left_key.clone().unwrap_or_default(),
                right_key: right_key.clone().unwrap_or_default(),
                base: c.base,
                marks: None,
                tombstone,
                held: c.held,
            }
        }
        None => EncodedPair {
            left_key: left_key.clone().unwrap_or_default(),
            right_key: right_key.clone().unwrap_or_default(),
            base: crate::state::encode_base(base),
            marks: crate::state::encode_marks(marks),
            tombstone,
            held: crate::state::encode_held(&plan.held),
        },
    };
    match plan.fate {
        Fate::Keep => puts.put(s, &link.name, row(&plan.base, &plan.marks, plan.tombstone))?,
        Fate::Create(side) => {
            if !all_confirmed {
                return Ok(());
            }
            if side == Side::Left {
                // A re-created left record replaces the pair's old left key.
                puts.flush(s, &link.name)?;
                s.delete_pair_by_right(&link.name, right_key.as_deref().unwrap_or_default())?;
            }
            puts.put_new(s, &link.name, row(&plan.base, &BTreeMap::new(), None))?;
            if let Some(((base, held), fields)) = flow_back {
                // The sender's key as planned, the new record's as its system gave it.
                let created = outcomes[side as usize].as_ref().and_then(|o| match o {
                    WriteOutcome::Created(k) => Some(k.clone()),
                    _ => None,
                });
                let keys = match side {
                    Side::Left => (created, plan.right_key.clone()),
                    Side::Right => (plan.left_key.clone(), created),
                };
                stage_flow_back(link, s, report, keys, side, base, held, fields)?;
            }
        }
        Fate::Delete(_) => {
            if all_confirmed {
                puts.flush(s, &link.name)?;
                s.delete_pair(&link.name, left_key.as_deref().unwrap_or_default())?;
            }
        }
        Fate::Tombstone { deleted_on } => {
            if all_confirmed {
                puts.put(
                    s,
                    &link.name,
                    row(&plan.base, &plan.marks, Some(deleted_on)),
                )?;
            }
        }
        Fate::Forget => {
            puts.flush(s, &link.name)?;
            s.delete_pair(&link.name, left_key.as_deref().unwrap_or_default())?;
        }
    }
    for change in plan.state_changes {
        puts.applied
            .push((left_key.clone(), right_key.clone(), change));
    }
    Ok(())
}

/// Plans, for the batches still to apply in this run, the write back to the sending side
/// of what the receiver of a create filled (a column default, a trigger) in fields it
/// owns: it flows back now, not a run later. A write like any other: conditional on the
/// sender still holding what it sent, journaled, read back.
#[allow(clippy::too_many_arguments)]
fn stage_flow_back(
    link: &LinkSpec,
    s: &mut StateStore,
    report: &mut LinkReport,
    (left_key, right_key): (Option<Key>, Option<Key>),
    created_on: Side,
    base: BTreeMap<Name, Value>,
    held: Held,
    fields: Vec<(usize, Value, Value)>,
) -> Result<(), StateError> {
    let to = created_on.other();
    let idx = to as usize;
    let mut plan = PairPlan::new(left_key, right_key, Fate::Keep, None);
    plan.base = base;
    plan.held = held;
    let Some(key) = (match to {
        Side::Left => plan.left_key.clone(),
        Side::Right => plan.right_key.clone(),
    }) else {
        return Ok(());
    };
    // Conditional on the sender's record as the create read it (the values it sent),
    // where a transform did not change them on the way: a field changed meanwhile makes
    // the write stale, so what else the read-back shows changed is this write's echo.
    let mut expect: Vec<(Name, Value)> = link
        .fields
        .iter()
        .enumerate()
        .filter(|(i, f)| f.is_verbatim() && !fields.iter().any(|(j, ..)| j == i))
        .filter_map(|(i, f)| {
            let sent = plan.base.get(&f.name)?;
            Some((link.field_column(i, to).clone(), sent.clone()))
        })
        .collect();
    let mut set = Vec::new();
    for (i, stored, sent) in fields {
        let field = &link.fields[i];
        let column = link.field_column(i, to).clone();
        plan.base_if[idx].insert(field.name.clone(), stored.clone());
        plan.holds_if[idx].insert(field.name.clone(), stored.clone());
        plan.changes[idx].push(Change {
            side: to,
            op: "update".into(),
            field: Some(field.name.to_string()),
            old: Some(sent.clone()),
            new: Some(stored.clone()),
            reason: format!(
                "filled by the {created_on} when syncline created the record (owner {})",
                field_owner(link, i).as_str()
            )
            .into(),
        });
        set.push((column.clone(), stored));
        expect.push((column, sent));
    }
    plan.writes[idx] = Some(Write::Update {
        key,
        set,
        expect,
        version: None,
    });
    report.direction(to).updated += 1;
    let body = serde_json::to_string(&plan).expect("plans serialize");
    s.stage_plan(&body)
}

fn decrement(counts: &mut super::report::DirectionCounts, plan: &PairPlan, idx: usize) {
    let counter = match (&plan.writes[idx], plan.fate) {
        (Some(Write::Create { .. }), _) => &mut counts.created,
        (Some(Write::Delete { .. }), _) | (_, Fate::Tombstone { .. }) => &mut counts.deleted,
        _ => &mut counts.updated,
    };
    *counter = counter.saturating_sub(1);
}
