//! Checkpointing an embedded state store off the writing thread.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a checkpoint copies
//! them back into the database file. By default SQLite does that inside whichever commit
//! crosses 1000 pages, on the thread running the cycle: a tenth of a large first load's
//! time. Here a thread of the store's own, with its own connection, runs passive
//! checkpoints (they never block the writer) whenever the WAL has grown; the writer keeps
//! a far higher automatic threshold as a backstop, so the WAL stays bounded even if this
//! thread falls behind.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// WAL size from which the thread checkpoints (SQLite's own default is ~4 MiB).
const CHECKPOINT_FROM_BYTES: u64 = 4 << 20;
/// How often the thread looks at the WAL's size. The file keeps its largest size until
/// the log restarts, so once a large run has grown it, every look checkpoints: each
/// checkpoint costs two fsyncs however little it copies, and at 20 ms a million-row
/// first load made ~600 of them (~1,300 fsyncs) where at 250 ms it makes ~40.
const POLL: Duration = Duration::from_millis(250);
/// The writer's own automatic checkpoint, in pages: only if this thread cannot keep up.
pub(super) const BACKSTOP_PAGES: i64 = 16_384;

pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the store at `path`. `None` if a second connection cannot be
    /// opened: the writer then keeps checkpointing as SQLite does by default.
    pub fn start(path: &Path) -> Option<Checkpointer> {
        let conn = rusqlite::Connection::open(path).ok()?;
        // The checkpoint's fsyncs follow this connection's setting: the store's.
        conn.pragma_update(None, "synchronous", "FULL").ok()?;
        let wal = wal_path(path);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("syncline-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
                    let grown =
                        std::fs::metadata(&wal).is_ok_and(|m| m.len() >= CHECKPOINT_FROM_BYTES);
                    if grown {
                        // A failure (the file went away, a busy lock) only means this round
                        // did nothing; the writer's backstop still bounds the WAL.
                        let outcome =
                            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                        if let Err(e) = outcome {
                            tracing::debug!("state store checkpoint skipped: {e}");
                        }
                    }
                }
            })
            .ok()?;
        Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
