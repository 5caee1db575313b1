//! Applying a staged plan, batch by batch: journal → write → commit.

use super::LinkIo;
use super::plan::{Fate, PairPlan};
use super::report::LinkReport;
use crate::Error;
use crate::config::LinkSpec;
use crate::connectors::{ConnectorError, Write, WriteOutcome};
use crate::model::Side;
use crate::state::{EncodedPair, JournalRange, QuarantineRow, StateError, StateStore};
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

/// Sends writes for one side to its system.
pub(crate) type Writer<'a> =
    dyn FnMut(Side, &[Write]) -> Result<Vec<WriteOutcome>, ConnectorError> + 'a;

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
    for side in [Side::Left, Side::Right] {
        let mut lent = batch.lend_writes(side);
        if lent.writes.is_empty() {
            continue;
        }
        let results = write_out(link, side, &mut lent.writes, |w| write(side, w));
        batch.settle(lent, results)?;
    }
    batch.commit(link, state, run_seq, report)
}

/// A batch journaled as `planned`: its writes go out to the systems, and what they
/// confirm is committed to the state store.
pub(crate) struct PlannedBatch {
    /// Where the batch's entries are in the journal.
    journaled: JournalRange,
    plans: Vec<PairPlan>,
    /// The keys each pair's entries were journaled under.
    keys: Vec<(Option<String>, Option<String>)>,
    outcomes: Vec<[Option<WriteOutcome>; 2]>,
    /// Each pair's created record's base, encoded (see [`write_out`]).
    created_bases: Vec<Option<String>>,
}

/// What a system said of a side's lent writes, and the base of each record they
/// created, by write.
pub(crate) struct WriteResults {
    pub outcomes: Result<Vec<WriteOutcome>, ConnectorError>,
    pub created_bases: Vec<Option<String>>,
}

/// Sends `writes` to side `to` through `apply`, then encodes each created record's base
/// as the store keeps it: the values its create sent, by field. A create sends the
/// link's fields in order, by their column on the receiving side, without NULLs (and
/// then the external id, which is no field). The sent values are dropped here: a first
/// load runs this on its writer's thread, which has time to spare, instead of the
/// planner's, which has none.
pub(crate) fn write_out(
    link: &LinkSpec,
    to: Side,
    writes: &mut [Write],
    apply: impl FnOnce(&[Write]) -> Result<Vec<WriteOutcome>, ConnectorError>,
) -> WriteResults {
    let outcomes = apply(writes);
    let Ok(confirmed) = &outcomes else {
        return WriteResults {
            outcomes,
            created_bases: Vec::new(),
        };
    };
    let created_bases = writes
        .iter_mut()
        .zip(confirmed)
        .map(|(write, outcome)| match (write, outcome) {
            (Write::Create { values }, WriteOutcome::Created(_)) => {
                let mut sent = values.iter().peekable();
                let fields = link
                    .fields
                    .iter()
                    .enumerate()
                    .filter_map(|(i, f)| {
                        let column = link.field_column(i, to);
                        sent.next_if(|(c, _)| c == column)
                            .map(|(_, v)| (&*f.name, v))
                    })
                    .collect();
                let base = crate::state::encode_base_fields(fields);
                *values = Vec::new();
                Some(base)
            }
            _ => None,
        })
        .collect();
    WriteResults {
        outcomes,
        created_bases,
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
    pub fn journal_in(
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
            created_bases: vec![None; plans.len()],
            plans,
            keys,
            outcomes,
        })
    }

    /// Takes `side`'s writes out of the plans, to send to its system.
    pub fn lend_writes(&mut self, side: Side) -> LentWrites {
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
        for (&pos, base) in lent.positions.iter().zip(results.created_bases) {
            if base.is_some() {
                self.created_bases[pos] = base;
            }
        }
        for (pos, outcome) in lent.positions.into_iter().zip(results.outcomes?) {
            self.outcomes[pos][idx] = Some(outcome);
        }
        Ok(())
    }

    /// Commits what the systems confirmed, in one transaction. Entries that did not
    /// apply are marked one by one; the rest of the batch's entries become `applied` in
    /// one statement, and the pairs are written many per statement.
    pub fn commit(
        self,
        link: &LinkSpec,
        state: &mut StateStore,
        run_seq: i64,
        report: &mut LinkReport,
    ) -> Result<(), Error> {
        Ok(state.transaction(|s| self.commit_in(link, s, run_seq, report))?)
    }

    /// [`commit`](Self::commit) inside the caller's state transaction.
    pub fn commit_in(
        self,
        link: &LinkSpec,
        s: &mut StateStore,
        run_seq: i64,
        report: &mut LinkReport,
    ) -> Result<(), StateError> {
        let PlannedBatch {
            journaled,
            plans,
            keys,
            outcomes,
            created_bases,
        } = self;
        let mut puts = PendingPairs::default();
        let pairs = plans.into_iter().zip(outcomes).zip(created_bases);
        for (((plan, outcome), created_base), planned) in pairs.zip(&keys) {
            let at = Journaled {
                range: journaled,
                keys: planned,
            };
            let outcome = (outcome, created_base);
            commit_pair(link, s, at, run_seq, report, plan, outcome, &mut puts)?;
        }
        puts.flush(s, &link.name)?;
        let applied: Vec<_> = puts
            .applied
            .iter()
            .map(|(lk, rk, c)| (lk.as_deref(), rk.as_deref(), c))
            .collect();
        s.journal_batch(journaled.run, &link.name, &applied, "applied")?;
        s.journal_applied_within(journaled)
    }
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
    /// Fingerprints of the pending rows' left keys: a collision only costs an early flush.
    left_keys: std::collections::HashSet<u64>,
    applied: Vec<(Option<String>, Option<String>, crate::state::Change)>,
}

impl PendingPairs {
    fn put(&mut self, s: &mut StateStore, link: &str, row: EncodedPair) -> Result<(), StateError> {
        // One statement cannot upsert a row twice: a repeated key goes in the next one.
        let fingerprint = xxhash_rust::xxh3::xxh3_64(row.left_key.as_bytes());
        if !self.left_keys.insert(fingerprint) {
            self.flush(s, link)?;
            self.left_keys.insert(fingerprint);
        }
        self.rows.push(row);
        Ok(())
    }

    /// Writes what is pending; a delete of a pair must come after this.
    fn flush(&mut self, s: &mut StateStore, link: &str) -> Result<(), StateError> {
        s.put_pairs(link, &self.rows)?;
        self.rows.clear();
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
    (outcomes, mut created_base): ([Option<WriteOutcome>; 2], Option<String>),
    puts: &mut PendingPairs,
) -> Result<(), StateError> {
    let (mut left_key, mut right_key) = at.keys.clone();
    let mut all_confirmed = true;
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
                let fields = std::mem::take(&mut plan.base_if[idx]);
                plan.base.extend(fields);
                let marks = std::mem::take(&mut plan.marks_if[idx]);
                plan.marks.extend(marks);
                "applied"
            }
            WriteOutcome::Stale => {
                all_confirmed = false;
                let counts = report.direction(side);
                decrement(counts, &plan, idx);
                counts.stale_skipped += 1;
                "stale"
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
                        kind: "rejected".into(),
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
    // Called once, whichever the fate. A created record's base is the one its create
    // sent, encoded already (see `write_out`), and is taken, not copied.
    let mut row = |base: &BTreeMap<_, _>, marks: &BTreeMap<_, _>, tombstone| EncodedPair {
        left_key: left_key.clone().unwrap_or_default(),
        right_key: right_key.clone().unwrap_or_default(),
        base: created_base
            .take()
            .unwrap_or_else(|| crate::state::encode_base(base)),
        marks: crate::state::encode_marks(marks),
        tombstone,
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
            puts.put(s, &link.name, row(&plan.base, &BTreeMap::new(), None))?;
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

fn decrement(counts: &mut super::report::DirectionCounts, plan: &PairPlan, idx: usize) {
    let counter = match (&plan.writes[idx], plan.fate) {
        (Some(Write::Create { .. }), _) => &mut counts.created,
        (Some(Write::Delete { .. }), _) | (_, Fate::Tombstone { .. }) => &mut counts.deleted,
        _ => &mut counts.updated,
    };
    *counter = counter.saturating_sub(1);
}
