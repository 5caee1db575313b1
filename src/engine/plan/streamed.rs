//! A left read in a run, streamed: each batch is looked up, merged with its right
//! partners, journaled, written and committed while the next is read, instead of every
//! plan being staged before the first write (as a first load streams its creates).
//!
//! One worker thread owns the right connection. For each left batch it is handed the
//! batch before's right updates to write, then this batch's partner keys to fetch; while
//! it works, this thread looks up the next batch's pairs, then merges and journals the
//! batch it got partners for and commits the batch that came back written, in one state
//! transaction. The write-ahead order holds per batch: journaled `planned` before its
//! writes are handed over, committed only after they come back.
//!
//! Only a batch that writes nothing but updates of right records it read is streamed.
//! One that deletes (the safety valves weigh a cycle's deletes before any is written),
//! creates, or writes the left (its connection is busy reading) is staged, and applied
//! after the read as any staged plan; so are the creates and matches of unpaired records.

use super::{LeftBatch, Planner};
use crate::Error;
use crate::connectors::{Connector, ConnectorError, ReadSpec, Write};
use crate::engine::apply::{LentWrites, PlannedBatch, WriteResults, write_out};
use crate::engine::one_behind::OneBehind;
use crate::engine::pair_plan::{Fate, PairPlan};
use crate::engine::read_ahead::scan_ahead;
use crate::model::{Key, Record, Side};

/// What the worker is handed for one left batch: the right updates of the batch before
/// (with what it keeps of them), and the batch whose partners it fetches.
type Context = (Option<(PlannedBatch, LentWrites)>, Option<LeftBatch>);
type Request = (Vec<Write>, Vec<Key>);
type Answer = (
    Vec<Write>,
    Option<WriteResults>,
    Result<Vec<Record>, ConnectorError>,
);

/// Whether a plan may be written while the read goes on: it keeps its pair and writes at
/// most an update of its right record.
fn streamable(plan: &PairPlan) -> bool {
    plan.fate == Fate::Keep
        && plan.writes[0].is_none()
        && matches!(plan.writes[1], None | Some(Write::Update { .. }))
}

impl Planner<'_> {
    /// Reads `left_spec` from `left` (a cursor read), streaming what it can (see the
    /// module). `before_write` is called before each batch's writes go out (the engine's
    /// hook acts once a cycle). Returns the records read.
    pub(super) fn read_left_streamed(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        left_spec: &ReadSpec,
        run: i64,
        before_write: &mut dyn FnMut(&str),
    ) -> Result<u64, Error> {
        // Half batches: a streamed read holds about twice as many at once (one written,
        // one merged, one fetched for, two read ahead). Measured on a 1% cycle of 1M
        // rows PG→PG, halves are as fast as whole ones and keep the peak under a staged
        // read's (75 MB against 93 MB; whole batches reached 100 MB).
        let batch = self.link.batch_size.div_ceil(2).max(1);
        let right_spec = self.layout.right.clone();
        let link = self.link;
        std::thread::scope(|scope| -> Result<u64, Error> {
            let (conn, spec) = (&mut *right, &right_spec);
            let mut worker: OneBehind<Context, Request, Answer> =
                OneBehind::start(scope, move |(mut writes, keys): Request| {
                    // In this order: the batch before is written before this batch's
                    // partners are read, so a fetch never sees a half-written batch.
                    let results = (!writes.is_empty()).then(|| {
                        write_out(link, Side::Right, &mut writes, |w| conn.apply(spec, w))
                    });
                    let fetched = if keys.is_empty() {
                        Ok(Vec::new())
                    } else {
                        conn.fetch(spec, &keys)
                    };
                    (writes, results, fetched)
                });
            let scanned = scan_ahead(left, left_spec, batch, &mut |records, bad| {
                // A stop between batches: what was written is committed below.
                crate::engine::stop_requested()?;
                let Some(looked_up) = self.look_up_left(records, bad)? else {
                    return Ok(());
                };
                self.stream_step(&mut worker, Some(looked_up), run, before_write)
                    .map(|_| ())
            });
            // The scan ended well: the batches the worker still holds are merged,
            // written and committed. It ended badly: the one it holds is taken back
            // below, and committed if it was written.
            let drained = match &scanned {
                Ok(_) => loop {
                    let step = self.stream_step(&mut worker, None, run, before_write);
                    crate::engine::one_behind::batch_done();
                    match step {
                        Ok(true) => continue,
                        Ok(false) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                },
                Err(_) => Ok(()),
            };
            let last = self.commit_written(worker.finish().map(|(held, answer)| (held.0, answer)));
            let scanned = scanned?;
            drained?;
            last?;
            Ok(scanned)
        })
    }

    /// One turn of the stream: takes the worker's answer for the batch it holds; in one
    /// state transaction (one fsync), journals the batch it fetched partners for and
    /// commits the batch it wrote; then hands it those writes and `next`'s partner keys.
    /// Returns whether it handed the worker anything.
    ///
    /// (Committing the written batch in a transaction of its own, while the worker writes
    /// the next, measured no faster: this thread's planning and commits are the longer
    /// stage either way, and one more batch in memory took the peak past 100 MB.)
    fn stream_step(
        &mut self,
        worker: &mut OneBehind<Context, Request, Answer>,
        next: Option<(LeftBatch, Vec<Key>)>,
        run: i64,
        before_write: &mut dyn FnMut(&str),
    ) -> Result<bool, Error> {
        let (mut written, merge) = match worker.receive() {
            Some(((lent, fetched_for), (writes, results, partners))) => (
                settled(lent, writes, results)?,
                fetched_for.map(|b| (b, partners)),
            ),
            None => (None, None),
        };
        let commits = written.is_some();
        let journaled = self.in_transaction(|p| {
            let mut to_write = None;
            if let Some((batch, partners)) = merge {
                let partners = partners?;
                // The merged batch's plans collect here instead of being staged.
                p.buffer = Some(Vec::with_capacity(batch.records.len()));
                let merged = p.left_merge(batch, partners);
                let plans = p.buffer.take().unwrap_or_default();
                merged?;
                if plans.iter().all(streamable) {
                    to_write = Some(PlannedBatch::journal_in(p.link, p.state, run, plans)?);
                } else {
                    for plan in &plans {
                        let body = serde_json::to_string(plan).expect("plans serialize");
                        p.state.stage_plan(&body)?;
                    }
                }
            }
            // Taken only once the merged batch is journaled: if that fails, the written
            // batch is still committed below.
            let refusal = match written.take() {
                Some(done) => done.commit_in(p.link, p.state, p.run_seq, p.report)?,
                None => None,
            };
            Ok((to_write, refusal))
        });
        let (to_write, refusal) = match journaled {
            Ok(done) => done,
            Err(e) => {
                // What a system confirmed is never forgotten.
                if let Some(done) = written {
                    done.commit(self.link, self.state, self.run_seq, self.report)?;
                }
                return Err(e);
            }
        };
        // This transaction journaled the merged batch and committed the written one.
        if to_write.is_some() {
            crate::fault::point("after_journal");
        }
        if commits {
            crate::fault::point("after_store_commit");
        }
        // Stopped once the batch the right refused whole is committed (its records are
        // quarantined with the reason); the batch just journaled is never sent, and the
        // run's end marks its entries `unknown`.
        if let Some(why) = refusal {
            return Err(Error::Refused(why));
        }
        let lent = to_write.map(|mut batch| {
            let lent = batch.lend_writes(Side::Right);
            (batch, lent)
        });
        if lent.as_ref().is_some_and(|(_, l)| !l.writes.is_empty()) {
            before_write(&self.link.name);
        }
        if lent.is_none() && next.is_none() {
            return Ok(false);
        }
        let (lent, writes) = match lent {
            Some((batch, mut lent)) => {
                let writes = std::mem::take(&mut lent.writes);
                (Some((batch, lent)), writes)
            }
            None => (None, Vec::new()),
        };
        let (fetch_for, keys) = match next {
            Some((batch, keys)) => (Some(batch), keys),
            None => (None, Vec::new()),
        };
        worker.send((lent, fetch_for), (writes, keys));
        Ok(true)
    }

    /// After a scan that failed: commits the batch the worker wrote, if it did (what a
    /// system confirmed is never forgotten); the batch it fetched for is dropped.
    fn commit_written(
        &mut self,
        answered: Option<(Option<(PlannedBatch, LentWrites)>, Answer)>,
    ) -> Result<(), Error> {
        let Some((lent, (writes, results, _))) = answered else {
            return Ok(());
        };
        let Some(batch) = settled(lent, writes, results)? else {
            return Ok(());
        };
        let refusal = batch.commit(self.link, self.state, self.run_seq, self.report)?;
        match refusal {
            Some(why) => Err(Error::Refused(why)),
            None => Ok(()),
        }
    }
}

/// A batch the worker wrote, with what the right said of its writes; `None` when it held
/// none. A write that failed whole is the error, and the batch's entries stay `planned`.
fn settled(
    lent: Option<(PlannedBatch, LentWrites)>,
    writes: Vec<Write>,
    results: Option<WriteResults>,
) -> Result<Option<PlannedBatch>, ConnectorError> {
    let (Some((mut batch, mut lent)), Some(results)) = (lent, results) else {
        return Ok(None);
    };
    lent.writes = writes;
    batch.settle(lent, results)?;
    Ok(Some(batch))
}
