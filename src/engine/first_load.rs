//! A first load into an empty collection, streamed: nothing to link, match or delete,
//! so every left record is a create planned straight from the scan, and each batch is
//! planned, journaled, written and committed while the next is read — one state
//! transaction per batch, and no staging of every record. Driven by the engine as its
//! own stage (see `engine::run_held_link`); `plan` (the dry run) plans the same creates
//! without writing.

use super::apply::{LentWrites, PlannedBatch, WriteResults, write_out};
use super::one_behind::OneBehind;
use super::plan::Planner;
use super::read_ahead::scan_ahead;
use crate::Error;
use crate::config::LinkSpec;
use crate::connectors::{Connector, ReadSpec, Write};
use crate::model::Side;
use std::thread::Scope;

/// Plans a first load's creates without writing (`plan`); returns the left's count.
pub(super) fn dry_run(planner: &mut Planner<'_>, left: &mut dyn Connector) -> Result<u64, Error> {
    let left_spec = planner.layout.left.clone();
    let batch = planner.link.batch_size;
    scan_ahead(left, &left_spec, batch, &mut |records, bad| {
        planner.in_transaction(|p| {
            p.keep_out(Side::Left, bad)?;
            p.plan_left_creates(records)
        })
    })
}

/// A first load in a run: each batch is planned, journaled and handed to the right's
/// writer thread while the batch before is committed (see [`WriteBehind`]). A batch
/// that came back written is committed in the transaction that journals the next
/// one: one state transaction, and one fsync, per batch instead of two.
pub(super) fn stream(
    planner: &mut Planner<'_>,
    run: i64,
    left: &mut dyn Connector,
    right: &mut dyn Connector,
    mut before_apply: Option<&mut dyn FnMut(&str)>,
) -> Result<u64, Error> {
    let left_spec = planner.layout.left.clone();
    let right_spec = planner.layout.right.clone();
    std::thread::scope(|scope| {
        let link = planner.link;
        let mut writer = WriteBehind::start(scope, link, Side::Right, right, &right_spec);
        let mut written: Option<PlannedBatch> = None;
        let scanned = scan_ahead(
            left,
            &left_spec,
            planner.link.batch_size,
            &mut |records, bad| {
                // A stop between batches: the scan ends, and what was written is
                // committed below as after any other end of the scan.
                super::stop_requested()?;
                planner.observe(Side::Left, &records);
                if records.is_empty() {
                    // Only records kept out: nothing to journal or send.
                    return planner.in_transaction(|p| p.keep_out(Side::Left, bad));
                }
                let (batch, refusal) = planner.in_transaction(|p| {
                    p.keep_out(Side::Left, bad)?;
                    // Sized once: a plan is large, and a growing buffer would move them all.
                    p.buffer = Some(Vec::with_capacity(records.len()));
                    p.plan_left_creates(records)?;
                    let plans = p.buffer.take().unwrap_or_default();
                    let batch = PlannedBatch::journal_in(p.link, p.state, run, plans)?;
                    // Taken only once this batch is journaled: if journaling fails, the
                    // written batch is still committed below.
                    let refusal = match written.take() {
                        Some(done) => done.commit_in(p.link, p.state, p.run_seq, p.report)?,
                        None => None,
                    };
                    Ok((batch, refusal))
                })?;
                // This transaction journaled the batch and committed the one before.
                crate::fault::point("after_journal");
                crate::fault::point("after_store_commit");
                // Stopped once the refused batch is committed; the batch just journaled
                // is never sent, and the run's end marks its entries `unknown`.
                if let Some(why) = refusal {
                    return Err(Error::Refused(why));
                }
                if let Some(hook) = before_apply.take() {
                    hook(&planner.link.name);
                }
                written = writer.send(batch)?;
                Ok(())
            },
        );
        // Whatever stopped the scan, batches whose writes came back are committed:
        // what the system confirmed is never forgotten.
        let last = writer.finish();
        // In this order: the batch written before is committed even if the last
        // one's write failed.
        let mut refusal = None;
        if let Some(done) = written {
            refusal = done.commit(planner.link, planner.state, planner.run_seq, planner.report)?;
        }
        if let Some(done) = last? {
            let why = done.commit(planner.link, planner.state, planner.run_seq, planner.report)?;
            refusal = refusal.or(why);
        }
        match (scanned, refusal) {
            (Ok(_), Some(why)) => Err(Error::Refused(why)),
            (scanned, _) => scanned,
        }
    })
}

/// What the writer keeps of a batch while its writes are out, and what it gets back.
type Lent = (PlannedBatch, LentWrites);
type Written = (Vec<Write>, WriteResults);

/// One side's system written on its own thread, one batch behind the planner.
pub(crate) struct WriteBehind<'scope> {
    side: Side,
    writer: OneBehind<'scope, Lent, Vec<Write>, Written>,
}

impl<'scope> WriteBehind<'scope> {
    /// Starts the writer thread for `side`, writing to `connector` what `spec` names.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        link: &'scope LinkSpec,
        side: Side,
        connector: &'scope mut dyn Connector,
        spec: &'scope ReadSpec,
    ) -> WriteBehind<'scope> {
        let writer = OneBehind::start(scope, move |mut writes: Vec<Write>| {
            let results = write_out(link, side, &mut writes, |w| connector.apply(spec, w));
            (writes, results)
        });
        WriteBehind { side, writer }
    }

    /// Hands `batch`'s writes to the writer once the batch before came back written.
    /// Returns that batch, with its outcomes, for the caller to commit; or the error that
    /// stopped its writes, and then `batch` is not handed over (it stays `planned`).
    pub fn send(&mut self, mut batch: PlannedBatch) -> Result<Option<PlannedBatch>, Error> {
        let before = Self::settled(self.writer.receive())?;
        let mut lent = batch.lend_writes(self.side);
        let writes = std::mem::take(&mut lent.writes);
        self.writer.send((batch, lent), writes);
        Ok(before)
    }

    /// Waits for the last batch's outcomes and stops the writer. Returns that batch to
    /// commit, or the error that stopped its writes.
    pub fn finish(self) -> Result<Option<PlannedBatch>, Error> {
        Self::settled(self.writer.finish())
    }

    fn settled(answered: Option<(Lent, Written)>) -> Result<Option<PlannedBatch>, Error> {
        let Some(((mut batch, mut lent), (writes, results))) = answered else {
            return Ok(None);
        };
        lent.writes = writes;
        batch.settle(lent, results)?;
        Ok(Some(batch))
    }
}
