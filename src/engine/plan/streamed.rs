//! A left read in a run, streamed: each batch is looked up, merged with its right
//! partners, journaled, written and committed while the next is read, instead of every
//! plan being staged before the first write (as a first load streams its creates).
//!
//! One worker thread owns the right connection and works through a queue of jobs, in
//! the order they are handed over: fetch a batch's partners, write a journaled batch's
//! updates. This thread stays a batch ahead of it: it looks up batch M+1's pairs and
//! hands over its fetch, then — while the worker writes batch M−1 and fetches M+1 — in
//! one state transaction merges and journals batch M and commits the batches whose
//! writes came back; then it hands over M's writes. So the right system is written while
//! the state store commits, and neither waits on the other: measured on a 1% cursor
//! cycle of 1M rows PG→PG, the lock-step version (fetch and write one request, then
//! merge and commit while the worker idled) spent more than half of each batch waiting.
//!
//! The write-ahead order holds per batch: journaled `planned` (and committed) before its
//! writes are handed over, committed only after they come back. Batches of one read
//! hold distinct keys, so merging one while the batch before is still being written
//! cannot see a half-written record.
//!
//! A batch whose pairs all say exactly what the right holds (no value held apart from the
//! base, no tombstone) is not fetched at all when the right makes writes conditional on
//! the values read and is not read itself in the cycle (its edits wait for a full read;
//! a cursor pass of it would leave alone the records merged here): its partners are
//! assumed as the base says they are, and each conditional write checks the assumption
//! where it lands. A write that finds the record otherwise (edited on the right, or
//! gone) is journaled `stale`, and once the read is done its record is fetched and
//! decided again from both sides as they are — the decision a fetched partner would have
//! given, a round trip later. On a 1% cycle that takes the partner fetch, about a third
//! of the right connection's time per batch, away.
//!
//! Only a batch that writes nothing but updates of right records it read is streamed.
//! One that deletes (the safety valves weigh a cycle's deletes before any is written),
//! creates, or writes the left (its connection is busy reading) is staged, and applied
//! after the read as any staged plan; so are the creates and matches of unpaired records.

use super::{LeftBatch, Planner};
use crate::Error;
use crate::config::LinkSpec;
use crate::connectors::{Conditional, Connector, ConnectorError, ReadSpec, Write};
use crate::engine::apply::{LentWrites, PlannedBatch, WriteResults, commit_batches_in, write_out};
use crate::engine::one_behind;
use crate::engine::pair_plan::{Fate, PairPlan};
use crate::engine::read_ahead::scan_ahead;
use crate::model::{Key, Record, Side, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{Scope, ScopedJoinHandle};

/// Whether a plan may be written while the read goes on: it keeps its pair and writes at
/// most an update of its right record.
fn streamable(plan: &PairPlan) -> bool {
    plan.fate == Fate::Keep
        && plan.writes[0].is_none()
        && matches!(plan.writes[1], None | Some(Write::Update { .. }))
}

/// A job for the worker.
enum Job {
    /// A left batch's right partners, by their keys.
    Fetch(Vec<Key>),
    /// A left batch's right partners as assumed: answered as they are, in turn.
    Assumed(Vec<Record>),
    /// A journaled batch's right updates.
    Write(Vec<Write>),
}

/// The worker's answer to a job, in the order the jobs were handed over.
enum Done {
    Fetched(Result<Vec<Record>, ConnectorError>),
    /// The writes given back, with what the right said of them; `None` when they were
    /// not sent (the read stopped before their turn).
    Written(Vec<Write>, Option<WriteResults>),
}

/// A batch with its right partners as fetched.
type Fetched = (LeftBatch, Result<Vec<Record>, ConnectorError>);

/// What this thread keeps of a job until it is answered.
enum Awaiting {
    Partners(LeftBatch),
    Outcomes(PlannedBatch, LentWrites),
}

/// The worker, and what it has been asked and not yet answered.
struct Pipeline<'scope> {
    jobs: Option<Sender<Job>>,
    answers: Receiver<Done>,
    worker: Option<ScopedJoinHandle<'scope, ()>>,
    awaiting: VecDeque<Awaiting>,
    /// Set when the read stops early: writes still queued are not sent.
    stop: &'scope AtomicBool,
    /// Batches whose writes came back, to commit in the order they were written.
    written: Vec<PlannedBatch>,
}

impl<'scope> Pipeline<'scope> {
    fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        stop: &'scope AtomicBool,
        link: &'scope LinkSpec,
        conn: &'scope mut dyn Connector,
        spec: &'scope ReadSpec,
    ) -> Self {
        let (jobs, queue) = channel::<Job>();
        // Unbounded both ways: the worker never blocks on this thread, and this thread
        // bounds the queue itself (a batch fetched ahead, at most two written behind).
        let (answer, answers) = channel::<Done>();
        let worker = scope.spawn(move || {
            for job in queue {
                let done = match job {
                    Job::Fetch(keys) => Done::Fetched(conn.fetch(spec, &keys)),
                    Job::Assumed(partners) => Done::Fetched(Ok(partners)),
                    Job::Write(writes) if stop.load(Ordering::Acquire) => {
                        Done::Written(writes, None)
                    }
                    // Nothing to send (bases and marks only): answered in turn, so
                    // the batch is committed in order with those around it.
                    Job::Write(writes) if writes.is_empty() => {
                        Done::Written(writes, Some(WriteResults::none()))
                    }
                    Job::Write(mut writes) => {
                        let results =
                            write_out(link, Side::Right, &mut writes, |w| conn.apply(spec, w));
                        // A write that failed whole: the ones queued behind it are not
                        // sent either (their entries stay `planned`, as a crash leaves
                        // them), and the read stops on the error.
                        if results.outcomes.is_err() {
                            stop.store(true, Ordering::Release);
                        }
                        Done::Written(writes, Some(results))
                    }
                };
                one_behind::batch_done();
                if answer.send(done).is_err() {
                    break;
                }
            }
        });
        Pipeline {
            jobs: Some(jobs),
            answers,
            worker: Some(worker),
            awaiting: VecDeque::new(),
            stop,
            written: Vec::new(),
        }
    }

    fn hand_over(&mut self, job: Job, keep: Awaiting) {
        let sent = self
            .jobs
            .as_ref()
            .expect("the worker runs until finish")
            .send(job);
        if sent.is_err() {
            self.worker_died();
        }
        self.awaiting.push_back(keep);
    }

    fn fetch(&mut self, batch: LeftBatch, keys: Vec<Key>) {
        self.hand_over(Job::Fetch(keys), Awaiting::Partners(batch));
    }

    fn assumed(&mut self, batch: LeftBatch, partners: Vec<Record>) {
        self.hand_over(Job::Assumed(partners), Awaiting::Partners(batch));
    }

    fn write(&mut self, batch: PlannedBatch, mut lent: LentWrites) {
        let writes = std::mem::take(&mut lent.writes);
        self.hand_over(Job::Write(writes), Awaiting::Outcomes(batch, lent));
    }

    /// How many batches wait for their partners.
    fn fetches_awaited(&self) -> usize {
        self.awaiting
            .iter()
            .filter(|a| matches!(a, Awaiting::Partners(_)))
            .count()
    }

    /// Takes answers until the oldest fetch is answered; the written batches answered
    /// before it wait in `written`. `None` when no fetch is awaited. A write that failed
    /// whole is the error (the batches written before it are kept for the caller to
    /// commit).
    fn next_fetched(&mut self) -> Result<Option<Fetched>, ConnectorError> {
        while self.fetches_awaited() > 0 {
            if let Some(fetched) = self.take_answer()? {
                return Ok(Some(fetched));
            }
        }
        Ok(None)
    }

    /// Takes the next answer: a fetch's is returned, a write's settled into `written`.
    fn take_answer(&mut self) -> Result<Option<Fetched>, ConnectorError> {
        let Some(kept) = self.awaiting.pop_front() else {
            return Ok(None);
        };
        let Ok(done) = self.answers.recv() else {
            self.worker_died()
        };
        match (kept, done) {
            (Awaiting::Partners(batch), Done::Fetched(partners)) => Ok(Some((batch, partners))),
            (Awaiting::Outcomes(mut batch, mut lent), Done::Written(writes, results)) => {
                if let Some(results) = results {
                    lent.writes = writes;
                    batch.settle(lent, results)?;
                    self.written.push(batch);
                }
                Ok(None)
            }
            _ => unreachable!("the worker answers its jobs in order"),
        }
    }

    /// Stops the worker once it has answered what it holds (`stop`: writes not yet
    /// started are not sent) and returns the batches written since the last commit,
    /// with the error that stopped a write, if one did.
    fn finish(mut self, stop: bool) -> (Vec<PlannedBatch>, Option<ConnectorError>) {
        if stop {
            self.stop.store(true, Ordering::Release);
        }
        self.jobs = None;
        let mut failed = None;
        while !self.awaiting.is_empty() {
            if let Err(e) = self.take_answer() {
                failed.get_or_insert(e);
            }
        }
        self.join_worker();
        (std::mem::take(&mut self.written), failed)
    }

    fn worker_died(&mut self) -> ! {
        self.jobs = None;
        one_behind::worker_died(&mut self.worker)
    }

    fn join_worker(&mut self) {
        self.jobs = None;
        one_behind::join_worker(&mut self.worker);
    }
}

impl Planner<'_> {
    /// Reads `left_spec` from `left` (a cursor read), streaming what it can (see the
    /// module). `before_write` is called before each batch's writes go out (the engine's
    /// hook acts once a cycle); `may_assume`: partners may be assumed rather than
    /// fetched. Returns the records read.
    pub(super) fn read_left_streamed(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        left_spec: &ReadSpec,
        run: i64,
        before_write: &mut dyn FnMut(&str),
        may_assume: bool,
    ) -> Result<u64, Error> {
        // Quarter batches: a streamed read holds about six at once (two read ahead, one
        // fetched ahead, one merged, two written behind). Measured on a 1% cycle of 1M
        // rows PG→PG (10,000 changed), quarters are as fast as halves (0.74–0.77 s
        // against 0.73–0.79 s) and peak at 64 MB where halves reached 90 MB.
        let batch = self.link.batch_size.div_ceil(4).max(1);
        let right_spec = self.layout.right.clone();
        let link = self.link;
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<u64, Error> {
            let mut pipe = Pipeline::start(scope, &stop, link, &mut *right, &right_spec);
            let scanned = scan_ahead(left, left_spec, batch, &mut |records, bad| {
                // A stop between batches: what was written is committed below.
                crate::engine::stop_requested()?;
                let Some((mut looked_up, keys)) = self.look_up_left(records, bad)? else {
                    return Ok(());
                };
                match may_assume
                    .then(|| self.assumed_partners(&looked_up))
                    .flatten()
                {
                    Some(partners) => {
                        looked_up.assumed = true;
                        pipe.assumed(looked_up, partners);
                    }
                    None => pipe.fetch(looked_up, keys),
                }
                // One batch's partners are fetched while the batch before is merged.
                while pipe.fetches_awaited() > 1 {
                    self.stream_step(&mut pipe, run, before_write)?;
                }
                Ok(())
            });
            // The scan ended well: the batches still fetched for are merged, written and
            // committed. It ended badly: what came back written is committed below.
            let drained = match &scanned {
                Ok(_) => loop {
                    if pipe.fetches_awaited() == 0 {
                        break Ok(());
                    }
                    let step = self.stream_step(&mut pipe, run, before_write);
                    crate::engine::one_behind::batch_done();
                    if let Err(e) = step {
                        break Err(e);
                    }
                },
                Err(_) => Ok(()),
            };
            let ended_well = scanned.is_ok() && drained.is_ok();
            let last = self.commit_rest(pipe.finish(!ended_well));
            let scanned = scanned?;
            drained?;
            last?;
            Ok(scanned)
        })
    }

    /// One turn of the stream: waits for the oldest fetched batch's partners; in one
    /// state transaction (one fsync), merges and journals that batch and commits the
    /// batches whose writes came back; then hands the worker that batch's writes.
    fn stream_step(
        &mut self,
        pipe: &mut Pipeline<'_>,
        run: i64,
        before_write: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        let Some((batch, partners)) = pipe.next_fetched()? else {
            return Ok(());
        };
        let written = std::mem::take(&mut pipe.written);
        let commits = !written.is_empty();
        let mut written = written.into_iter();
        let journaled = self.in_transaction(|p| {
            let partners = partners?;
            let assumed = batch.assumed;
            // The merged batch's plans collect here instead of being staged.
            p.buffer = Some(Vec::with_capacity(batch.records.len()));
            let merged = p.left_merge(batch, partners);
            let mut plans = p.buffer.take().unwrap_or_default();
            merged?;
            let mut to_write = None;
            if plans.iter().all(streamable) {
                // Only a streamed write is decided again in this cycle when its assumed
                // partner turns out otherwise; a staged one found stale is counted stale
                // (and decided by the next cycle), as any.
                if assumed {
                    for plan in &mut plans {
                        plan.assumed = true;
                    }
                }
                to_write = Some(PlannedBatch::journal_in(p.link, p.state, run, plans)?);
            } else {
                for plan in &plans {
                    let body = serde_json::to_string(plan).expect("plans serialize");
                    p.state.stage_plan(&body)?;
                }
            }
            // Taken only once the merged batch is journaled: if that fails, the written
            // batches are still committed below.
            let refusal =
                commit_batches_in(p.link, p.state, p.run_seq, p.report, written.by_ref())?;
            Ok((to_write, refusal))
        });
        let (to_write, refusal) = match journaled {
            Ok(done) => done,
            Err(e) => {
                // What a system confirmed is never forgotten.
                self.commit_written(written)?;
                return Err(e);
            }
        };
        // This transaction journaled the merged batch and committed the written ones.
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
        if let Some(mut batch) = to_write {
            let lent = batch.lend_writes(Side::Right);
            if !lent.writes.is_empty() {
                before_write(&self.link.name);
            }
            pipe.write(batch, lent);
        }
        Ok(())
    }

    /// Whether partners may be assumed in a read: the right makes each write
    /// conditional on the values read, and every field is held on the right as the base
    /// holds it (no transform, meaning or composed column between them).
    pub(super) fn may_assume_partners(&self, right: &dyn Connector) -> bool {
        right.capabilities().conditional == Conditional::Values
            && self.translated.iter().all(|t| !t)
            && self
                .link
                .fields
                .iter()
                .all(|f| f.transform.is_identity() && !f.composed)
    }

    /// A batch's right partners as its pairs say they are: `None` when one pair cannot
    /// say (a value the right holds apart from the base, a field the base lacks, a key
    /// that does not decode), and the batch is fetched.
    fn assumed_partners(&self, batch: &LeftBatch) -> Option<Vec<Record>> {
        let mut partners = Vec::with_capacity(batch.pairs.len());
        for pair in batch.pairs.values().filter(|p| p.tombstone.is_none()) {
            if !pair.held[1].is_empty() {
                return None;
            }
            let values = self
                .link
                .fields
                .iter()
                .map(|f| pair.base.get(&f.name).cloned())
                .collect::<Option<Vec<Value>>>()?;
            let key = Key::decode(&pair.right_key).ok()?;
            partners.push(Record::new(key, values));
        }
        Some(partners)
    }

    /// Commits the batches written since the last commit (what a system confirmed is
    /// never forgotten); then a write that failed whole, or a refusal, is the error.
    fn commit_rest(
        &mut self,
        (written, failed): (Vec<PlannedBatch>, Option<ConnectorError>),
    ) -> Result<(), Error> {
        let refusal = self.commit_written(written)?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        match refusal {
            Some(why) => Err(Error::Refused(why)),
            None => Ok(()),
        }
    }

    /// Commits written batches in one state transaction; returns why the link must stop
    /// there, if a side refused one whole.
    fn commit_written(
        &mut self,
        written: impl IntoIterator<Item = PlannedBatch>,
    ) -> Result<Option<String>, Error> {
        let (link, run_seq) = (self.link, self.run_seq);
        let report = &mut *self.report;
        Ok(self
            .state
            .transaction(|s| commit_batches_in(link, s, run_seq, report, written))?)
    }
}
