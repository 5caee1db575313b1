//! Named fault points: places in a cycle where a test can make the process die at once
//! (`std::process::abort`, as a SIGKILL would: no destructor, no rollback, no flush), to
//! prove that a crash at that very step ends, after the next run, where an uninterrupted
//! run ends. Wall-clock kills land wherever the scheduler puts them; these land exactly.
//!
//! `SYNCLINE_FAULT=POINT:N` aborts on the N-th time the process reaches `POINT` (N = 1
//! when left out); `POINT:N:pause=MS` pauses there instead, for MS milliseconds (to hold a
//! run mid-way while a test does something else). Unset, every point costs one load of a
//! value set once.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every point a cycle passes, in the order a batch reaches them.
pub const POINTS: &[&str] = &[
    // The batch's entries are journaled `planned` and committed to the store.
    "after_journal",
    // Inside the receiving system's transaction, after the batch's first write.
    "mid_batch",
    // The receiving system committed the batch; the store knows nothing of it yet.
    "after_receiver_commit",
    // In the store's transaction that records the batch's outcome, before it commits.
    "before_store_commit",
    // The store committed the batch's outcome.
    "after_store_commit",
];

struct Armed {
    point: String,
    at: u64,
    /// Pause this long instead of aborting.
    pause_ms: Option<u64>,
    seen: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("SYNCLINE_FAULT").ok()?;
            let mut parts = spec.split(':');
            let point = parts.next()?.to_string();
            let at = parts.next().map_or(Some(1), |n| n.parse().ok())?;
            let pause_ms = match parts.next() {
                Some(action) => Some(action.strip_prefix("pause=")?.parse().ok()?),
                None => None,
            };
            Some(Armed {
                point,
                at,
                pause_ms,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `SYNCLINE_FAULT` names this point and this is its N-th pass.
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "unknown fault point {name}");
    if let Some(armed) = armed()
        && armed.point == name
        && armed.seen.fetch_add(1, Ordering::SeqCst) + 1 == armed.at
    {
        match armed.pause_ms {
            Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            None => std::process::abort(),
        }
    }
}
