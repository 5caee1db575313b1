//! How far a run has got, for a display: records read per side and pairs written, as
//! they happen. One observer per process (the CLI's progress bars); without one, a call
//! costs an atomic load.

use crate::model::Side;
use std::sync::OnceLock;

/// What happened.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A link's cycle starts.
    Link(&'a str),
    /// Records read from a side.
    Read(Side, u64),
    /// Pairs whose writes were committed.
    Written(u64),
    /// The link's cycle ended.
    Done,
}

/// What is told of progress.
pub type Observer = Box<dyn Fn(Progress<'_>) + Send + Sync>;

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Sets the process's progress observer (once; later calls are ignored).
pub fn on_progress(observer: Observer) {
    let _ = OBSERVER.set(observer);
}

pub(crate) fn report(event: Progress<'_>) {
    if let Some(observer) = OBSERVER.get() {
        observer(event);
    }
}
