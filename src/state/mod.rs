//! The state store: everything syncline remembers between runs.
//!
//! - **pairs**: the id map and the base together — one row per linked record pair with
//!   both native keys, the last agreed value of each field, and the marks that detect
//!   bouncing writes. They are always read and written together, so one row keeps a
//!   pair's identity and base consistent by construction.
//! - **journal**: every planned and applied write, with its reason and outcome. Entries
//!   are written `planned` before their batch is written; a batch that applied is then
//!   recorded once, as its range of entries (**journal_applied**), and only entries with
//!   another outcome (`stale`, `rejected`, `unknown`) are updated. A batch's creates, and
//!   its updates of one field, are one entry each, its records listed in
//!   **journal_member_chunks** (a chunk per row: keys, an update's as `[key, old, new]`);
//!   a record whose write gets another outcome leaves the group as an entry of its own.
//! - **conflicts**, **quarantine**: what waits for a person.
//! - **runs**, **links**: run history, and which config each link's rows belong to.
//!
//! Embedded SQLite by default, in WAL mode with `synchronous = FULL`, so a commit is on
//! disk when it returns; one writer at a time (`BEGIN IMMEDIATE`); a thread of its own checkpoints the WAL. Or PostgreSQL, for a
//! store shared by several machines. Scratch tables for one run (records waiting to be
//! matched, the staged plan) are temporary: they never reach the store's durable tables.

mod attention;
mod checkpoint;
mod codec;
mod db;
mod journal;
mod lease;
mod pairs;
mod runs;
mod schema;
mod scratch;

pub use attention::*;
pub use codec::*;
pub use journal::*;
pub use scratch::*;

pub use lease::LinkHold;
pub use runs::{LinkReads, Ranges};

use crate::model::{Key, Name, Side, Value};
use db::{Db, P, Row};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot upgrade the schema of {path}: {source}")]
    Migrate {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL store's server refused or went away; the error says which
    /// ([`Failure`](crate::connectors::Failure)).
    #[error(transparent)]
    Postgres(crate::connectors::SystemError),
    #[error("cannot connect to the PostgreSQL state store: {0}")]
    Connect(String),
    #[error("corrupt state row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Lease(String),
    #[error(
        "{path} is not a syncline state store: {why}. A new store is made only where no file exists: move this file away (or point [state] path elsewhere) to start one, and nothing is lost by mistake"
    )]
    NotAStore { path: String, why: &'static str },
}

/// An existing file where the embedded store is expected must be an SQLite database: an
/// empty file (a failed copy, a truncation) taken as a new store would re-link every
/// record with no word that every base was lost.
fn check_store_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let not_a_store = |why| StateError::NotAStore {
        path: path.display().to_string(),
        why,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StateError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            });
        }
    };
    let mut header = Vec::with_capacity(16);
    let _ = file.by_ref().take(16).read_to_end(&mut header);
    match header.len() {
        0 => Err(not_a_store("the file is empty")),
        _ if header != b"SQLite format 3\0" => Err(not_a_store("it is not an SQLite database")),
        _ => Ok(()),
    }
}

/// An SQLite database that has tables but was never a syncline store (`user_version`
/// 0): someone's data, which the store's tables must not be created in.
fn refuse_foreign_database(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if version == 0 && tables > 0 {
        return Err(StateError::NotAStore {
            path: path.display().to_string(),
            why: "it is an SQLite database with tables of its own",
        });
    }
    Ok(())
}

pub type Result<T> = std::result::Result<T, StateError>;

impl From<postgres::Error> for StateError {
    fn from(e: postgres::Error) -> StateError {
        StateError::Postgres(crate::connectors::sql::pg::system_error(e))
    }
}

pub struct StateStore {
    /// Stopped before the connection closes (fields drop in order), so the store's own
    /// connection is the last and folds the WAL back into the file.
    checkpointer: Option<checkpoint::Checkpointer>,
    db: Db,
    read_only: bool,
    /// Statements whose text depends on a row or key count, by name and count, built once.
    multi_row: HashMap<(&'static str, usize), std::rc::Rc<str>>,
    /// Field names read from bases so far: each pair's base shares them instead of
    /// allocating its own (see [`decode_base`]).
    names: std::collections::HashSet<Name>,
    /// An embedded, writable store's per-link lock files (see [`lease`]).
    leases: Option<lease::FileLeases>,
}

fn enc_values(vs: &[Value]) -> String {
    serde_json::to_string(vs).expect("values serialize")
}

fn dec_values(s: &str) -> Result<Vec<Value>> {
    serde_json::from_str(s).map_err(|e| StateError::Corrupt(format!("{e}: {s}")))
}

pub(crate) fn hash_values(vs: &[Value]) -> u64 {
    let mut buf = String::new();
    for v in vs {
        buf.push_str(&v.encode());
        buf.push('\u{0}');
    }
    xxhash_rust::xxh3::xxh3_64(buf.as_bytes())
}

/// Keys looked up (or marked) per statement.
const LOOKUP_CHUNK: usize = 200;

/// Rows written per multi-row statement (journal entries, pairs).
const WRITE_CHUNK: usize = 100;

/// Members of a grouped journal entry listed per `journal_member_chunks` row.
const MEMBER_CHUNK: usize = 500;

/// `$first, $first+1, …` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VALUES` tuples for `rows` rows: each is `(shared` + its own `per_row` parameters
/// (numbered on from `first`) + `trailing)`.
fn row_tuples(rows: usize, shared: &str, first: usize, per_row: usize, trailing: &str) -> String {
    (0..rows)
        .map(|i| {
            format!(
                "({shared}{}{trailing})",
                placeholders(first + i * per_row, per_row)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn side_of(s: &str) -> Side {
    if s == "left" { Side::Left } else { Side::Right }
}

impl StateStore {
    /// Opens (creating it and its folder if needed) and upgrades the embedded store.
    ///
    /// # Errors
    /// The file cannot be created or opened, or its schema cannot be upgraded.
    pub fn open(path: &Path) -> Result<StateStore> {
        let open_err = |e| StateError::Open {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let leases = lease::FileLeases::beside(path);
        let mut conn;
        {
            // Two processes opening a new store at once would both switch it to WAL (the
            // switch does not wait for a busy store: it fails) and both find it empty
            // and create its tables (the second fails): one at a time. And the file
            // SQLite creates on open is empty until then: looked at under the same turn.
            let _one_at_a_time = leases.wait_for("schema")?;
            check_store_file(path)?;
            conn = Connection::open(path).map_err(open_err)?;
            conn.busy_timeout(Duration::from_secs(30))
                .map_err(open_err)?;
            refuse_foreign_database(&conn, path)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(open_err)?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(open_err)?;
            schema::migrations()
                .to_latest(&mut conn)
                .map_err(|e| StateError::Migrate {
                    path: path.display().to_string(),
                    source: e,
                })?;
        }
        let checkpointer = checkpoint::Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
                .map_err(open_err)?;
        }
        let mut store = Self::prepare_sqlite(conn, false)?;
        store.checkpointer = checkpointer;
        store.leases = Some(leases);
        Ok(store)
    }

    /// Opens an existing embedded store without ever writing to it (for `plan`,
    /// `status`, …). A store that does not exist yet reads as empty.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub(crate) fn open_read_only(path: &Path) -> Result<StateStore> {
        if !path.exists() {
            let mut conn = Connection::open_in_memory()?;
            schema::migrations()
                .to_latest(&mut conn)
                .map_err(|e| StateError::Migrate {
                    path: ":memory:".into(),
                    source: e,
                })?;
            return Self::prepare_sqlite(conn, true);
        }
        check_store_file(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StateError::Open {
            path: path.display().to_string(),
            source: e,
        })?;
        conn.busy_timeout(Duration::from_secs(30))?;
        refuse_foreign_database(&conn, path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if !(schema::READABLE_FROM..=schema::VERSION).contains(&version) {
            return Err(StateError::Corrupt(format!(
                "{} has schema version {version}, this syncline uses {}; run `syncline run` once to upgrade it",
                path.display(),
                schema::VERSION
            )));
        }
        let mut store = Self::prepare_sqlite(conn, true)?;
        // Only looked at (`status` names who is running a link), never taken.
        store.leases = Some(lease::FileLeases::beside(path));
        Ok(store)
    }

    /// Opens the store a config names. `read_only` stores never write a durable table
    /// (for `plan`, `status`, `log`, …).
    ///
    /// # Errors
    /// See [`open`](Self::open), [`open_read_only`](Self::open_read_only) and
    /// [`open_postgres`](Self::open_postgres).
    pub fn for_config(
        location: &crate::config::StateLocation,
        read_only: bool,
    ) -> Result<StateStore> {
        use crate::config::StateLocation;
        match (location, read_only) {
            (StateLocation::Sqlite(path), false) => Self::open(path),
            (StateLocation::Sqlite(path), true) => Self::open_read_only(path),
            (StateLocation::Postgres(url), ro) => Self::open_postgres(url.expose(), ro),
        }
    }

    /// Connects to a PostgreSQL store, creating or upgrading its tables. `read_only`
    /// stores (for `plan`, `status`, …) never write a durable table.
    ///
    /// # Errors
    /// The server cannot be reached, or the schema cannot be created or upgraded.
    pub fn open_postgres(url: &str, read_only: bool) -> Result<StateStore> {
        let mut client = crate::connectors::sql::tls::connect(url).map_err(StateError::Connect)?;
        client.batch_execute(
            // The process id names the holder of a link another run finds taken.
            &format!(
                "SET client_min_messages = warning; SET application_name = 'syncline:state pid {}'",
                std::process::id()
            ),
        )?;
        if !read_only {
            let mut tx = client.transaction()?;
            // One upgrader at a time, across machines.
            tx.batch_execute("SELECT pg_advisory_xact_lock(4242001); CREATE TABLE IF NOT EXISTS syncline_schema (version bigint NOT NULL)")?;
            let version: i64 = tx
                .query_opt("SELECT version FROM syncline_schema", &[])?
                .map_or(0, |r| r.get(0));
            for (i, step) in schema::pg_migrations()
                .iter()
                .enumerate()
                .skip(version as usize)
            {
                tx.batch_execute(step)?;
                tx.execute("DELETE FROM syncline_schema", &[])?;
                tx.execute(
                    "INSERT INTO syncline_schema VALUES ($1)",
                    &[&(i as i64 + 1)],
                )?;
            }
            tx.commit()?;
        } else {
            let exists: bool = client
                .query_one("SELECT to_regclass('syncline_schema') IS NOT NULL", &[])?
                .get(0);
            let version: i64 = if exists {
                client
                    .query_opt("SELECT version FROM syncline_schema", &[])?
                    .map_or(0, |r| r.get(0))
            } else {
                0
            };
            if version == 0 {
                // Nothing stored yet: an empty store reads as empty, from session-private
                // tables, and nothing is created in the database.
                for step in schema::pg_migrations() {
                    client.batch_execute(&step.replace("CREATE TABLE", "CREATE TEMP TABLE"))?;
                }
            } else if !(schema::READABLE_FROM..=schema::VERSION).contains(&version) {
                return Err(StateError::Corrupt(format!(
                    "the PostgreSQL state store has schema version {version}, this syncline uses {}; run `syncline run` once to upgrade it",
                    schema::VERSION
                )));
            }
        }
        client.batch_execute(schema::PG_TEMP_TABLES)?;
        Ok(StateStore {
            checkpointer: None,
            db: Db::Postgres {
                client: Box::new(client),
                statements: Default::default(),
            },
            read_only,
            multi_row: HashMap::new(),
            names: Default::default(),
            leases: None,
        })
    }

    fn prepare_sqlite(conn: Connection, read_only: bool) -> Result<StateStore> {
        conn.set_prepared_statement_cache_capacity(64);
        // 8 MiB of page cache (SQLite's default is 2): the scratch tables of a large
        // first run spill less, and memory still does not grow with the collection.
        conn.pragma_update(None, "cache_size", -8192)?;
        conn.execute_batch(schema::SQLITE_TEMP_TABLES)?;
        Ok(StateStore {
            checkpointer: None,
            db: Db::Sqlite {
                conn,
                dialect: HashMap::new(),
            },
            read_only,
            multi_row: HashMap::new(),
            names: Default::default(),
            leases: None,
        })
    }

    /// The statement `name` for `rows` rows (or keys), built by `build` the first time.
    fn multi_row_sql(
        &mut self,
        name: &'static str,
        rows: usize,
        build: impl FnOnce(usize) -> String,
    ) -> std::rc::Rc<str> {
        self.multi_row
            .entry((name, rows))
            .or_insert_with(|| build(rows).into())
            .clone()
    }

    /// Opens a write transaction; [`end`](Self::end) commits or rolls it back.
    pub(crate) fn begin(&mut self) -> Result<()> {
        // A read-only SQLite store only ever writes its TEMP scratch tables: plain BEGIN.
        let sql = match (&self.db, self.read_only) {
            (Db::Sqlite { .. }, false) => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        self.db.batch(sql)
    }

    pub fn end(&mut self, commit: bool) -> Result<()> {
        if commit {
            self.db.batch("COMMIT")
        } else {
            let _ = self.db.batch("ROLLBACK");
            Ok(())
        }
    }

    /// Runs `f` in one write transaction.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.end(true)?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.end(false);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
