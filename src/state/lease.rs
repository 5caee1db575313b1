//! Holds that die with their holder: one run of a link at a time, and telling a run
//! that died from one still going, across every process that shares the store.
//!
//! Two runs of one link at once would both plan the same creates from the same id map
//! and write them twice. So a run holds its link while it works on it, and a run that
//! finds the link held elsewhere leaves it alone. A run also holds its own id while it
//! lasts: a run found `running` in the store is only taken for dead (and its planned
//! writes for `unknown`) when nobody holds its id. Each hold is one the system drops by
//! itself when its holder dies, so a crashed run never leaves anything stuck:
//!
//! - PostgreSQL store: a session advisory lock on the store's connection, keyed by the
//!   hold's name (the server releases it when that connection ends);
//! - embedded SQLite store: an OS lock on a file per hold beside the store, in
//!   `<state file>.locks/` (the OS releases it when the process ends).

use super::db::{Db, P};
use super::{Result, StateError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether this process now holds a link (or a run's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkHold {
    Held,
    /// Another process holds it: who, as far as the store can tell.
    HeldElsewhere(String),
}

/// What is held.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hold<'a> {
    Link(&'a str),
    Run(i64),
}

impl Hold<'_> {
    /// Unique among holds: a link's name in any characters, a run's id.
    fn name(self) -> String {
        match self {
            Hold::Link(name) => format!("link-{name}"),
            Hold::Run(id) => format!("run-{id}"),
        }
    }
}

/// The advisory-lock key of a hold: the server's own stable text hash, seeded so that
/// syncline's keys stay apart from an application's own advisory locks. Advisory locks
/// are per database; the store's schema is in the key too, so two stores in one
/// database (each in its own schema) do not hold each other's links.
const PG_LOCK_KEY: &str = "hashtextextended('syncline ' || current_schema() || ' ' || $1, 4242)";

/// The lock files of an embedded store's holds, held open while they last (and only
/// looked at through a read-only store).
pub(super) struct FileLeases {
    dir: PathBuf,
    held: HashMap<String, File>,
}

impl FileLeases {
    pub(super) fn beside(state_file: &Path) -> FileLeases {
        let mut name = state_file.file_name().unwrap_or_default().to_os_string();
        name.push(".locks");
        FileLeases {
            dir: state_file.with_file_name(name),
            held: HashMap::new(),
        }
    }

    fn path_of(&self, hold: &str) -> PathBuf {
        // A link's name may hold any character: those a file name might not take are
        // written as %XX, so two names never share a file.
        let mut file = String::new();
        for b in hold.bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                file.push(char::from(b));
            } else {
                file.push_str(&format!("%{b:02X}"));
            }
        }
        file.push_str(".lock");
        self.dir.join(file)
    }

    /// Opens (creating it and its folder if need be) the lock file of `hold`.
    fn open(&self, hold: &str) -> Result<(File, PathBuf)> {
        let path = self.path_of(hold);
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
            })
            .map(|file| (file, path.clone()))
            .map_err(|e| lock_error(&path, e))
    }

    /// Waits for, and takes, the hold `name` until the returned file is dropped: for
    /// work every process must do one at a time (creating or upgrading the schema).
    pub(super) fn wait_for(&self, name: &str) -> Result<File> {
        let (file, path) = self.open(name)?;
        file.lock().map_err(|e| lock_error(&path, e))?;
        Ok(file)
    }

    fn hold(&mut self, hold: &str) -> Result<LinkHold> {
        if self.held.contains_key(hold) {
            return Ok(LinkHold::Held);
        }
        let (mut file, path) = self.open(hold)?;
        let io_err = |e| lock_error(&path, e);
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the message another run prints.
                file.set_len(0).map_err(io_err)?;
                file.rewind().map_err(io_err)?;
                write!(
                    file,
                    "process {} since {}",
                    std::process::id(),
                    super::now()
                )
                .map_err(io_err)?;
                self.held.insert(hold.to_string(), file);
                Ok(LinkHold::Held)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(LinkHold::HeldElsewhere(format!(
                "{} (lock file {})",
                holder_written_in(&mut file),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(e)),
        }
    }

    /// Who holds `hold`, if anyone, without taking it: a held file cannot be locked; a
    /// free one is locked and let go at once (and a missing one was never held).
    fn holder(&self, hold: &str) -> Result<Option<String>> {
        if self.held.contains_key(hold) {
            return Ok(None);
        }
        let path = self.path_of(hold);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(lock_error(&path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(std::fs::TryLockError::WouldBlock) => Ok(Some(holder_written_in(&mut file))),
            Err(std::fs::TryLockError::Error(e)) => Err(lock_error(&path, e)),
        }
    }

    fn release(&mut self, hold: &str, forget: bool) {
        // Closing the file releases its lock. A link's file stays for its next run; a
        // run's is removed (a run that opened it just before finds it free, as it is).
        if self.held.remove(hold).is_some() && forget {
            let _ = std::fs::remove_file(self.path_of(hold));
        }
    }
}

/// Who a held lock file says holds it (written by [`FileLeases::hold`]). Best effort: the
/// holder may be between emptying the file and writing it.
fn holder_written_in(file: &mut File) -> String {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    if holder.is_empty() {
        holder = "another process".into();
    }
    holder
}

fn lock_error(path: &Path, e: std::io::Error) -> StateError {
    StateError::Lease(format!("cannot lock {}: {e}", path.display()))
}

/// How long a hold is tried again before it counts as taken. A holder killed a moment
/// ago may still hold: its PostgreSQL server process notices the closed connection, and
/// lets go, only a few milliseconds later.
pub(super) const PATIENCE: Duration = Duration::from_secs(1);

/// Takes `what` for this process, trying again until `deadline`, or says who has it.
pub(super) fn hold_by(
    db: &mut Db,
    mut files: Option<&mut FileLeases>,
    what: Hold<'_>,
    deadline: Instant,
) -> Result<LinkHold> {
    loop {
        let outcome = hold(db, files.as_deref_mut(), what)?;
        if outcome == LinkHold::Held || Instant::now() >= deadline {
            return Ok(outcome);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Takes `what` for this process, or says who has it.
pub(super) fn hold(
    db: &mut Db,
    files: Option<&mut FileLeases>,
    what: Hold<'_>,
) -> Result<LinkHold> {
    let name = what.name();
    match db {
        Db::Sqlite { .. } => match files {
            Some(files) => files.hold(&name),
            // Only a store with no file has no lock files (an empty one `plan` reads):
            // nothing is written to it, so nothing needs holding.
            None => Ok(LinkHold::Held),
        },
        Db::Postgres { .. } => {
            // Session-level, not transaction-level: the hold outlives the run's many
            // transactions and ends with the connection.
            let took = db
                .query_opt(
                    &format!("SELECT CAST(pg_try_advisory_lock({PG_LOCK_KEY}) AS INTEGER)"),
                    &[P::Text(&name)],
                )?
                .map(|r| r.int(0))
                .transpose()?
                == Some(1);
            if took {
                return Ok(LinkHold::Held);
            }
            let holder = pg_holder(db, &name)?;
            Ok(LinkHold::HeldElsewhere(holder.unwrap_or_else(|| {
                "another connection to the state store".into()
            })))
        }
    }
}

/// Who holds `what`, if anyone but this process, without taking it.
pub(super) fn holder(
    db: &mut Db,
    files: Option<&FileLeases>,
    what: Hold<'_>,
) -> Result<Option<String>> {
    match db {
        Db::Sqlite { .. } => files.map_or(Ok(None), |f| f.holder(&what.name())),
        Db::Postgres { .. } => pg_holder(db, &what.name()),
    }
}

/// The session holding the advisory lock of `name`, other than this one, as people know it.
/// (`pg_locks` lists every database's locks: only this database's are this store's.)
fn pg_holder(db: &mut Db, name: &str) -> Result<Option<String>> {
    db.query_opt(
        &format!(
            "SELECT CAST(a.application_name AS TEXT), CAST(COALESCE(host(a.client_addr), 'a local socket') AS TEXT),
                    CAST(a.pid AS TEXT), CAST(a.backend_start AS TEXT)
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.pid <> pg_backend_pid()
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((CAST(l.classid AS BIGINT) << 32) | CAST(l.objid AS BIGINT)) = {PG_LOCK_KEY}"
        ),
        &[P::Text(name)],
    )?
    .map(|r| -> Result<String> {
        Ok(format!(
            "{} from {} (server process {}, connected since {})",
            r.text(0)?,
            r.text(1)?,
            r.text(2)?,
            r.text(3)?
        ))
    })
    .transpose()
}

pub(super) fn release(db: &mut Db, files: Option<&mut FileLeases>, what: Hold<'_>) -> Result<()> {
    let name = what.name();
    match db {
        Db::Sqlite { .. } => {
            if let Some(files) = files {
                files.release(&name, matches!(what, Hold::Run(_)));
            }
            Ok(())
        }
        Db::Postgres { .. } => {
            db.query_opt(
                &format!("SELECT CAST(pg_advisory_unlock({PG_LOCK_KEY}) AS INTEGER)"),
                &[P::Text(&name)],
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link's name becomes a file name inside the lock folder whatever it holds: no
    /// separator or `..` leads out of it, and two names never share a file.
    #[test]
    fn every_link_name_has_a_lock_file_of_its_own_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let leases = FileLeases::beside(&dir.path().join("state.db"));
        let names = ["c", "a/b", "../x", "a%2Fb", "ü", "a b", "link-c", ".."];
        let paths: Vec<PathBuf> = names
            .iter()
            .map(|n| leases.path_of(&Hold::Link(n).name()))
            .collect();
        for (name, path) in names.iter().zip(&paths) {
            assert_eq!(path.parent(), Some(leases.dir.as_path()), "{name}");
        }
        let distinct: std::collections::HashSet<_> = paths.iter().collect();
        assert_eq!(distinct.len(), names.len());
        assert_ne!(
            leases.path_of(&Hold::Link("run-1").name()),
            leases.path_of(&Hold::Run(1).name())
        );
    }

    /// Two handles on one embedded store exclude each other, as two processes do, and a
    /// hold ends when its handle goes.
    #[test]
    fn a_held_link_is_refused_to_another_handle_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let mut first = FileLeases::beside(&state);
        let mut second = FileLeases::beside(&state);
        let name = Hold::Link("c").name();
        assert_eq!(first.hold(&name).unwrap(), LinkHold::Held);
        assert!(matches!(
            second.hold(&name).unwrap(),
            LinkHold::HeldElsewhere(who) if who.contains(&format!("process {}", std::process::id()))
        ));
        assert!(second.holder(&name).unwrap().is_some());
        assert_eq!(
            first.holder(&name).unwrap(),
            None,
            "its own hold is nobody else's"
        );
        first.release(&name, false);
        assert_eq!(second.holder(&name).unwrap(), None);
        assert_eq!(second.hold(&name).unwrap(), LinkHold::Held);
    }
}
