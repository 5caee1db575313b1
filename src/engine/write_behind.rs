//! Writing behind: one side's system is written on its own thread, one batch behind the
//! planner, so the system's work on batch N overlaps with committing batch N−1 to the
//! state store and planning and journaling batch N+1.
//!
//! The write-ahead order holds per batch: a batch is journaled as planned before its
//! writes are handed over, and committed only after its outcomes come back. At most two
//! batches are between journal and commit at any moment; a crash leaves both `unknown`,
//! as it leaves one when writing in step.

use super::apply::{LentWrites, PlannedBatch};
use crate::Error;
use crate::connectors::{Connector, ConnectorError, ReadSpec, Write, WriteOutcome};
use crate::model::Side;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

type Outcomes = Result<Vec<WriteOutcome>, ConnectorError>;

/// The writer thread of one side, and the batch it is writing.
pub(crate) struct WriteBehind<'scope> {
    side: Side,
    to_writer: Option<SyncSender<Vec<Write>>>,
    from_writer: Receiver<(Vec<Write>, Outcomes)>,
    writer: Option<ScopedJoinHandle<'scope, ()>>,
    /// The batch whose writes are out, with the positions of its lent writes.
    in_flight: Option<(PlannedBatch, LentWrites)>,
}

impl<'scope> WriteBehind<'scope> {
    /// Starts the writer thread for `side`, writing to `connector` what `spec` names.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        side: Side,
        connector: &'scope mut dyn Connector,
        spec: &'scope ReadSpec,
    ) -> WriteBehind<'scope> {
        let (to_writer, work) = sync_channel::<Vec<Write>>(1);
        let (done, from_writer) = sync_channel(1);
        let writer = scope.spawn(move || {
            for writes in work {
                let outcomes = connector.apply(spec, &writes);
                if done.send((writes, outcomes)).is_err() {
                    break;
                }
            }
        });
        WriteBehind {
            side,
            to_writer: Some(to_writer),
            from_writer,
            writer: Some(writer),
            in_flight: None,
        }
    }

    /// Hands `batch`'s writes to the writer. Returns the batch handed over before, with
    /// its outcomes, for the caller to commit; or the error that stopped its writes.
    pub fn send(&mut self, mut batch: PlannedBatch) -> Result<Option<PlannedBatch>, Error> {
        let before = self.settle_in_flight()?;
        let mut lent = batch.lend_writes(self.side);
        let writes = std::mem::take(&mut lent.writes);
        let sender = self
            .to_writer
            .as_ref()
            .expect("the writer runs until finish");
        if sender.send(writes).is_err() {
            self.writer_died();
        }
        self.in_flight = Some((batch, lent));
        Ok(before)
    }

    /// Waits for the last batch's outcomes and stops the writer. Returns that batch to
    /// commit, or the error that stopped its writes.
    pub fn finish(mut self) -> Result<Option<PlannedBatch>, Error> {
        let last = self.settle_in_flight();
        self.to_writer = None;
        self.join_writer();
        last
    }

    fn settle_in_flight(&mut self) -> Result<Option<PlannedBatch>, Error> {
        let Some((mut batch, mut lent)) = self.in_flight.take() else {
            return Ok(None);
        };
        let Ok((writes, outcomes)) = self.from_writer.recv() else {
            self.writer_died();
        };
        lent.writes = writes;
        batch.settle(lent, outcomes)?;
        Ok(Some(batch))
    }

    /// The writer only stops early by panicking: its panic is the one to report.
    fn writer_died(&mut self) -> ! {
        self.join_writer();
        unreachable!("the {} writer stopped without a panic", self.side)
    }

    fn join_writer(&mut self) {
        if let Some(Err(panic)) = self.writer.take().map(ScopedJoinHandle::join) {
            std::panic::resume_unwind(panic);
        }
    }
}
