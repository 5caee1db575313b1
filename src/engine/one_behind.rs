//! Work handed to a thread one batch behind the cycle: the cycle gives the worker batch
//! N's request and, while the worker answers it, finishes batch N−1 with the answer it
//! already has. Used to write a first load's right side ([`WriteBehind`]) and to fetch
//! the right partners of the left scan's batches.
//!
//! For writes the write-ahead order holds per batch: a batch is journaled as planned
//! before its writes are handed over, and committed only after its outcomes come back.
//! A first load commits a batch that came back in the transaction that journals the
//! next, so at most three batches are between journal and commit at any moment; a crash
//! leaves them `unknown`, as it leaves one when writing in step.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

/// A worker thread answering requests in order, with the caller's context for the one
/// request it holds.
pub(crate) struct OneBehind<'scope, Context, Request, Answer> {
    to_worker: Option<SyncSender<Request>>,
    from_worker: Receiver<Answer>,
    worker: Option<ScopedJoinHandle<'scope, ()>>,
    in_flight: Option<Context>,
}

impl<'scope, Context, Request, Answer> OneBehind<'scope, Context, Request, Answer>
where
    Request: Send + 'scope,
    Answer: Send + 'scope,
{
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        mut work: impl FnMut(Request) -> Answer + Send + 'scope,
    ) -> Self {
        let (to_worker, requests) = sync_channel::<Request>(1);
        // Room for the one answer: a worker never blocks on a caller that went away.
        let (answers, from_worker) = sync_channel::<Answer>(1);
        let worker = scope.spawn(move || {
            for request in requests {
                let answer = work(request);
                batch_done();
                if answers.send(answer).is_err() {
                    break;
                }
            }
        });
        OneBehind {
            to_worker: Some(to_worker),
            from_worker,
            worker: Some(worker),
            in_flight: None,
        }
    }

    /// Hands `request` to the worker, keeping `context` until it is answered. The one
    /// before must have been [received](Self::receive): a caller decides on each answer
    /// before handing over more.
    pub fn send(&mut self, context: Context, request: Request) {
        assert!(self.in_flight.is_none(), "one request at a time");
        let sender = self
            .to_worker
            .as_ref()
            .expect("the worker runs until finish");
        if sender.send(request).is_err() {
            self.worker_died();
        }
        self.in_flight = Some(context);
    }

    /// Waits for the last answer and stops the worker.
    pub fn finish(mut self) -> Option<(Context, Answer)> {
        let last = self.receive();
        self.to_worker = None;
        self.join_worker();
        last
    }

    /// Waits for the answer to the request handed over, if one is.
    pub(crate) fn receive(&mut self) -> Option<(Context, Answer)> {
        let context = self.in_flight.take()?;
        match self.from_worker.recv() {
            Ok(answer) => Some((context, answer)),
            Err(_) => self.worker_died(),
        }
    }

    /// The worker only stops early by panicking: its panic is the one to report.
    fn worker_died(&mut self) -> ! {
        worker_died(&mut self.worker)
    }

    fn join_worker(&mut self) {
        join_worker(&mut self.worker);
    }
}

/// Joins a cycle's worker thread, if it still runs, passing its panic on.
pub(crate) fn join_worker(worker: &mut Option<ScopedJoinHandle<'_, ()>>) {
    if let Some(Err(panic)) = worker.take().map(ScopedJoinHandle::join) {
        std::panic::resume_unwind(panic);
    }
}

/// A worker that stopped taking work or answering: it only does so by panicking, and
/// its panic is the one to report.
pub(crate) fn worker_died(worker: &mut Option<ScopedJoinHandle<'_, ()>>) -> ! {
    join_worker(worker);
    unreachable!("the worker thread stopped without a panic")
}

static BATCH_DONE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Has every thread of a cycle call `hook` after each batch it handled: the binary hands
/// freed memory back to its allocator there (the library does not know the allocator).
pub fn on_batch_done(hook: fn()) {
    let _ = BATCH_DONE.set(hook);
}

/// Called by each thread of a cycle after each batch it handled (see [`on_batch_done`]).
pub(crate) fn batch_done() {
    if let Some(hook) = BATCH_DONE.get() {
        hook();
    }
}
