//! The state store: everything syncline remembers between runs.
//!
//! - **pairs**: the id map and the base together — one row per linked record pair with
//!   both native keys, the last agreed value of each field, and the marks that detect
//!   bouncing writes. They are always read and written together, so one row keeps a
//!   pair's identity and base consistent by construction.
//! - **journal**: every planned and applied write, with its reason and outcome.
//! - **conflicts**, **quarantine**: what waits for a person.
//! - **runs**, **links**: run history, and which config each link's rows belong to.
//!
//! Embedded SQLite in WAL mode with `synchronous = FULL`, so a commit is on disk when it
//! returns; one writer at a time (`BEGIN IMMEDIATE`). Scratch tables for one run (records
//! waiting to be matched, the staged plan) are `TEMP`: they never touch the file.

mod schema;

use crate::model::{Key, Side, Value};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
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
    #[error("corrupt state row: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StateError>;

/// Detects a value that does not stick: the side it was written to changed it back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The side syncline last wrote this unit to.
    pub side: Side,
    /// Fingerprint of the value written (xxh3 of its encoding).
    pub hash: u64,
    /// Fingerprint of the value it replaced: a bounce is the same replacement again
    /// (a trigger rewriting our value the same way), not a person's new edit.
    #[serde(default)]
    pub replaced: u64,
    /// The link's run number of that write.
    pub run: i64,
    /// How many consecutive runs had to write the same value again.
    pub bounces: u32,
}

/// One linked pair: the id map entry and its base.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairRow {
    pub left_key: String,
    pub right_key: String,
    /// Field name → last agreed value (normalized by the field's transform).
    pub base: BTreeMap<String, Value>,
    /// Unit name → last write mark.
    pub marks: BTreeMap<String, Mark>,
    /// `Some(side)`: that side's record was deleted and the link says `ignore`: the pair
    /// is kept so the survivor is neither synced nor re-created.
    pub tombstone: Option<Side>,
}

/// A journal row.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub run: i64,
    pub at: String,
    pub link: String,
    pub left_key: Option<String>,
    pub right_key: Option<String>,
    pub side: String,
    pub op: String,
    pub field: Option<String>,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
    pub reason: String,
    pub status: String,
}

/// A change to journal, before it has an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub side: Side,
    pub op: String,
    pub field: Option<String>,
    pub old: Option<Value>,
    pub new: Option<Value>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConflictRow {
    pub link: String,
    pub left_key: String,
    pub right_key: String,
    pub unit: String,
    pub left_value: Vec<Value>,
    pub right_value: Vec<Value>,
    pub base_value: Option<Vec<Value>>,
    pub cause: String,
    pub status: String,
    pub resolution: Option<Vec<Value>>,
    pub detected_run: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub link: String,
    pub side: Side,
    pub key: String,
    pub field: String,
    pub kind: String,
    pub reason: String,
    pub detected_run: i64,
}

/// Quarantine kinds that stay until a person releases them; the others are found again
/// (or not) by every run.
pub const PERSISTENT_QUARANTINE: &[&str] = &["flapping"];

/// A pairs row as stored: left key, right key, base JSON, marks JSON, tombstone.
type RawPair = (String, String, String, Option<String>, Option<String>);

pub struct StateStore {
    conn: Connection,
    read_only: bool,
}

fn enc_values(vs: &[Value]) -> String {
    serde_json::to_string(vs).expect("values serialize")
}

fn dec_values(s: &str) -> Result<Vec<Value>> {
    serde_json::from_str(s).map_err(|e| StateError::Corrupt(format!("{e}: {s}")))
}

pub fn hash_values(vs: &[Value]) -> u64 {
    let mut buf = String::new();
    for v in vs {
        buf.push_str(&v.encode());
        buf.push('\u{0}');
    }
    xxhash_rust::xxh3::xxh3_64(buf.as_bytes())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl StateStore {
    /// Opens (creating it and its folder if needed) and upgrades the state store.
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
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(open_err)?;
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
        Self::prepare(conn, false)
    }

    /// Opens an existing store without ever writing to it (for `plan`, `status`, …).
    /// A store that does not exist yet reads as empty.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn open_read_only(path: &Path) -> Result<StateStore> {
        if !path.exists() {
            let mut conn = Connection::open_in_memory()?;
            schema::migrations()
                .to_latest(&mut conn)
                .map_err(|e| StateError::Migrate {
                    path: ":memory:".into(),
                    source: e,
                })?;
            return Self::prepare(conn, true);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StateError::Open {
            path: path.display().to_string(),
            source: e,
        })?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != schema::VERSION {
            return Err(StateError::Corrupt(format!(
                "{} has schema version {version}, this syncline uses {}; run `syncline run` once to upgrade it",
                path.display(),
                schema::VERSION
            )));
        }
        Self::prepare(conn, true)
    }

    fn prepare(conn: Connection, read_only: bool) -> Result<StateStore> {
        conn.set_prepared_statement_cache_capacity(64);
        // 8 MiB of page cache (SQLite's default is 2): the scratch tables of a large
        // first run spill less, and memory still does not grow with the collection.
        conn.pragma_update(None, "cache_size", -8192)?;
        conn.execute_batch(schema::TEMP_TABLES)?;
        Ok(StateStore { conn, read_only })
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Opens a write transaction; [`end`](Self::end) commits or rolls it back.
    pub fn begin(&mut self) -> Result<()> {
        // A read-only store only ever writes its TEMP scratch tables: a plain BEGIN.
        self.conn.execute_batch(if self.read_only {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        })?;
        Ok(())
    }

    pub fn end(&mut self, commit: bool) -> Result<()> {
        if commit {
            self.conn.execute_batch("COMMIT")?;
        } else {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        Ok(())
    }

    /// Runs `f` in one write transaction.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    // ---- runs and links -------------------------------------------------------------

    pub fn begin_run(&mut self, command: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (started_at, command, status) VALUES (?1, ?2, 'running')",
            params![now(), command],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(
        &mut self,
        run: i64,
        status: &str,
        summary: &serde_json::Value,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished_at = ?1, status = ?2, summary = ?3 WHERE id = ?4",
            params![now(), status, summary.to_string(), run],
        )?;
        Ok(())
    }

    /// Runs that never finished (the process died) are marked so, and the writes they
    /// journaled as planned become `unknown`: the next run looks them up before retrying.
    pub fn mark_interrupted_runs(&mut self) -> Result<usize> {
        self.transaction(|s| {
            let n = s.conn.execute(
                "UPDATE runs SET status = 'interrupted' WHERE status = 'running'",
                [],
            )?;
            s.conn.execute(
                "UPDATE journal SET status = 'unknown' WHERE status = 'planned'",
                [],
            )?;
            Ok(n)
        })
    }

    pub fn last_runs(&self, limit: i64) -> Result<Vec<serde_json::Value>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, started_at, finished_at, command, status, summary FROM runs ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            let summary: Option<String> = r.get(5)?;
            Ok(serde_json::json!({
                "run": r.get::<_, i64>(0)?,
                "started_at": r.get::<_, String>(1)?,
                "finished_at": r.get::<_, Option<String>>(2)?,
                "command": r.get::<_, String>(3)?,
                "status": r.get::<_, String>(4)?,
                "summary": summary.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()),
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The link's run counter and whether the store's rows for it were made for the same
    /// collections and keys. `None` for a link the store has never seen.
    pub fn link_state(&self, link: &str) -> Result<Option<(String, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT identity, run_seq FROM links WHERE name = ?1",
                [link],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Starts a new run of a link: records its identity, bumps its run counter. When the
    /// identity changed (the config now points at other collections or keys), the old id
    /// map and base are dropped: they describe other records.
    pub fn begin_link_run(&mut self, link: &str, identity: &str) -> Result<(i64, bool)> {
        self.transaction(|s| {
            let existing = s.link_state(link)?;
            let reset = matches!(&existing, Some((id, _)) if id != identity);
            if reset {
                s.conn.execute("DELETE FROM pairs WHERE link = ?1", [link])?;
                s.conn.execute("DELETE FROM conflicts WHERE link = ?1", [link])?;
                s.conn.execute("DELETE FROM quarantine WHERE link = ?1", [link])?;
            }
            let seq = existing.map_or(0, |(_, seq)| seq) + 1;
            s.conn.execute(
                "INSERT INTO links (name, identity, run_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET identity = excluded.identity, run_seq = excluded.run_seq",
                params![link, identity, seq],
            )?;
            Ok((seq, reset))
        })
    }

    // ---- pairs (id map + base) --------------------------------------------------------

    fn read_pair(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawPair> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    }

    fn decode_pair(raw: RawPair) -> Result<PairRow> {
        let (left_key, right_key, base, marks, tomb) = raw;
        let base: BTreeMap<String, Value> = serde_json::from_str(&base)
            .map_err(|e| StateError::Corrupt(format!("base of {left_key}: {e}")))?;
        let marks = match marks {
            Some(m) => serde_json::from_str(&m)
                .map_err(|e| StateError::Corrupt(format!("marks of {left_key}: {e}")))?,
            None => BTreeMap::new(),
        };
        let tombstone = match tomb.as_deref() {
            Some("left") => Some(Side::Left),
            Some("right") => Some(Side::Right),
            _ => None,
        };
        Ok(PairRow {
            left_key,
            right_key,
            base,
            marks,
            tombstone,
        })
    }

    /// Pairs by one side's encoded keys.
    pub fn pairs_by(
        &self,
        link: &str,
        side: Side,
        keys: &[String],
    ) -> Result<HashMap<String, PairRow>> {
        let sql = match side {
            Side::Left => {
                "SELECT left_key, right_key, base, marks, tombstone FROM pairs WHERE link = ?1 AND left_key = ?2"
            }
            Side::Right => {
                "SELECT left_key, right_key, base, marks, tombstone FROM pairs WHERE link = ?1 AND right_key = ?2"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut out = HashMap::new();
        for k in keys {
            if let Some(raw) = stmt
                .query_row(params![link, k], Self::read_pair)
                .optional()?
            {
                out.insert(k.clone(), Self::decode_pair(raw)?);
            }
        }
        Ok(out)
    }

    pub fn pair_count(&self, link: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM pairs WHERE link = ?1", [link], |r| {
                r.get(0)
            })?)
    }

    pub fn put_pair(&mut self, link: &str, pair: &PairRow) -> Result<()> {
        let base = serde_json::to_string(&pair.base).expect("base serializes");
        let marks = (!pair.marks.is_empty())
            .then(|| serde_json::to_string(&pair.marks).expect("marks serialize"));
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO pairs (link, left_key, right_key, base, marks, tombstone) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![link, pair.left_key, pair.right_key, base, marks, pair.tombstone.map(Side::as_str)])?;
        Ok(())
    }

    pub fn delete_pair_by_right(&mut self, link: &str, right_key: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM pairs WHERE link = ?1 AND right_key = ?2")?
            .execute(params![link, right_key])?;
        Ok(())
    }

    pub fn delete_pair(&mut self, link: &str, left_key: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM pairs WHERE link = ?1 AND left_key = ?2")?
            .execute(params![link, left_key])?;
        Ok(())
    }

    // ---- scratch tables for one run ---------------------------------------------------

    pub fn clear_scratch(&mut self) -> Result<()> {
        self.conn.execute_batch(
            "DELETE FROM temp.seen; DELETE FROM temp.unlinked; DELETE FROM temp.matches; DELETE FROM temp.plan;
             DROP INDEX IF EXISTS temp.unlinked_key; DROP INDEX IF EXISTS temp.unlinked_match;
             DROP INDEX IF EXISTS temp.unlinked_ref; DROP INDEX IF EXISTS temp.unlinked_text;",
        )?;
        Ok(())
    }

    /// Remembers that a key was present in this run's scan of `side`.
    pub fn mark_seen(&mut self, side: Side, keys: &[String]) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO temp.seen (side, key) VALUES (?1, ?2)")?;
        for k in keys {
            stmt.execute(params![side.as_str(), k])?;
        }
        Ok(())
    }

    /// For right keys: whether each is linked, tombstoned, and whether its left partner
    /// was seen in this run's left scan. Unlinked keys are absent.
    pub fn right_links(
        &self,
        link: &str,
        right_keys: &[String],
    ) -> Result<HashMap<String, RightLink>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT p.tombstone IS NOT NULL,
                    EXISTS (SELECT 1 FROM temp.seen s WHERE s.side = 'left' AND s.key = p.left_key)
               FROM pairs p WHERE p.link = ?1 AND p.right_key = ?2",
        )?;
        let mut out = HashMap::new();
        for k in right_keys {
            if let Some(l) = stmt
                .query_row(params![link, k], |r| {
                    Ok(RightLink {
                        tombstoned: r.get(0)?,
                        left_seen: r.get(1)?,
                    })
                })
                .optional()?
            {
                out.insert(k.clone(), l);
            }
        }
        Ok(out)
    }

    /// Pairs neither of whose records was seen in this run's scans (or whose surviving
    /// record of a tombstoned pair is gone).
    pub fn pairs_with_nothing_left(&self, link: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT left_key FROM pairs p WHERE link = ?1
               AND NOT EXISTS (SELECT 1 FROM temp.seen s WHERE s.side = 'left' AND s.key = p.left_key)
               AND NOT EXISTS (SELECT 1 FROM temp.seen s WHERE s.side = 'right' AND s.key = p.right_key)",
        )?;
        let rows = stmt.query_map([link], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Stages a record no pair knows, to be matched once both sides are read.
    pub fn stage_unlinked(&mut self, side: Side, rec: &Unlinked) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO temp.unlinked (side, key, key_text, match_key, ref, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![side.as_str(), rec.key.encode(), rec.key.display_text(), rec.match_key, rec.ext_ref, enc_values(&rec.values)])?;
        Ok(())
    }

    /// Pairs staged records, first by external-id reference, then by normalized match
    /// key. A reference or match key that more than one record shares on either side is
    /// ambiguous: those records are returned as such, never guessed. Returns
    /// (matched pairs as (left, right) staged keys, ambiguous records).
    pub fn match_unlinked(&mut self) -> Result<Vec<(Side, String, String)>> {
        // Indexes are built once here, after staging: cheaper than maintaining them
        // through a million random inserts.
        self.conn.execute_batch(schema::TEMP_INDEXES)?;
        self.conn.execute_batch(
            "-- a right record whose right_ref names a left key, and that is the only one to
             INSERT OR IGNORE INTO temp.matches (left_key, right_key, how)
               SELECT l.key, r.key, 'right_ref' FROM temp.unlinked r JOIN temp.unlinked l
                 ON l.side = 'left' AND r.side = 'right' AND r.ref = l.key_text
               WHERE (SELECT count(*) FROM temp.unlinked r2 WHERE r2.side = 'right' AND r2.ref = l.key_text) = 1;
             INSERT OR IGNORE INTO temp.matches (left_key, right_key, how)
               SELECT l.key, r.key, 'left_ref' FROM temp.unlinked l JOIN temp.unlinked r
                 ON l.side = 'left' AND r.side = 'right' AND l.ref = r.key_text
               WHERE (SELECT count(*) FROM temp.unlinked l2 WHERE l2.side = 'left' AND l2.ref = r.key_text) = 1
                 AND NOT EXISTS (SELECT 1 FROM temp.matches m WHERE m.left_key = l.key OR m.right_key = r.key);
             UPDATE temp.unlinked SET matched = 1 WHERE
               (side = 'left' AND key IN (SELECT left_key FROM temp.matches)) OR
               (side = 'right' AND key IN (SELECT right_key FROM temp.matches));
             INSERT OR IGNORE INTO temp.matches (left_key, right_key, how)
               SELECT l.key, r.key, 'match_on' FROM temp.unlinked l JOIN temp.unlinked r
                 ON l.side = 'left' AND r.side = 'right' AND l.match_key = r.match_key
               WHERE l.matched = 0 AND r.matched = 0
                 AND (SELECT count(*) FROM temp.unlinked x WHERE x.match_key = l.match_key AND x.matched = 0) = 2;
             UPDATE temp.unlinked SET matched = 1 WHERE matched = 0 AND
               ((side = 'left' AND key IN (SELECT left_key FROM temp.matches)) OR
                (side = 'right' AND key IN (SELECT right_key FROM temp.matches)));
             -- ambiguous: a match key shared by several records, present on both sides
             UPDATE temp.unlinked SET matched = 2 WHERE matched = 0 AND match_key IN (
               SELECT match_key FROM temp.unlinked WHERE matched = 0 AND match_key IS NOT NULL
               GROUP BY match_key HAVING count(DISTINCT side) = 2);",
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT side, key, match_key FROM temp.unlinked WHERE matched = 2 ORDER BY match_key, side, key",
        )?;
        let rows = stmt.query_map([], |r| {
            let side: String = r.get(0)?;
            Ok((
                if side == "left" {
                    Side::Left
                } else {
                    Side::Right
                },
                r.get(1)?,
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Matched pairs, `limit` at a time after `after` (a rowid), with both records.
    pub fn matched_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Unlinked, Unlinked, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.rowid, l.key, l.record, r.key, r.record, m.how FROM temp.matches m
               JOIN temp.unlinked l ON l.side = 'left' AND l.key = m.left_key
               JOIN temp.unlinked r ON r.side = 'right' AND r.key = m.right_key
             WHERE m.rowid > ?1 ORDER BY m.rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, lk, lr, rk, rr, how) = row?;
            out.push((
                id,
                Unlinked::decode(&lk, &lr)?,
                Unlinked::decode(&rk, &rr)?,
                how,
            ));
        }
        Ok(out)
    }

    /// Records of one side that matched nothing, `limit` at a time after a rowid.
    pub fn unmatched_page(
        &self,
        side: Side,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Unlinked)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, key, record FROM temp.unlinked WHERE side = ?1 AND matched = 0 AND rowid > ?2 ORDER BY rowid LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![side.as_str(), after, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, k, rec) = row?;
            out.push((id, Unlinked::decode(&k, &rec)?));
        }
        Ok(out)
    }

    pub fn count_unmatched(&self, side: Side) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM temp.unlinked WHERE side = ?1 AND matched = 0",
            [side.as_str()],
            |r| r.get(0),
        )?)
    }

    pub fn stage_plan(&mut self, body: &str) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO temp.plan (body) VALUES (?1)")?
            .execute([body])?;
        Ok(())
    }

    pub fn plan_page(&self, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, body FROM temp.plan WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    // ---- journal -------------------------------------------------------------------

    /// Journals changes as `planned`; returns their ids in order.
    pub fn journal_planned(
        &mut self,
        run: i64,
        link: &str,
        left_key: Option<&str>,
        right_key: Option<&str>,
        changes: &[Change],
    ) -> Result<Vec<i64>> {
        let at = now();
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO journal (run, at, link, left_key, right_key, side, op, field, old, new, reason, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'planned')",
        )?;
        let mut ids = Vec::with_capacity(changes.len());
        for c in changes {
            stmt.execute(params![
                run,
                at,
                link,
                left_key,
                right_key,
                c.side.as_str(),
                c.op,
                c.field,
                c.old.as_ref().map(Value::encode),
                c.new.as_ref().map(Value::encode),
                c.reason
            ])?;
            ids.push(self.conn.last_insert_rowid());
        }
        Ok(ids)
    }

    pub fn journal_outcome(
        &mut self,
        id: i64,
        status: &str,
        left_key: Option<&str>,
        right_key: Option<&str>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE journal SET status = ?2, left_key = coalesce(left_key, ?3), right_key = coalesce(right_key, ?4) WHERE id = ?1",
            )?
            .execute(params![id, status, left_key, right_key])?;
        Ok(())
    }

    /// The journal, newest first, filtered.
    pub fn journal(
        &self,
        link: Option<&str>,
        key: Option<&str>,
        run: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JournalEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, run, at, link, left_key, right_key, side, op, field, old, new, reason, status FROM journal
             WHERE (?1 IS NULL OR link = ?1) AND (?2 IS NULL OR left_key = ?2 OR right_key = ?2) AND (?3 IS NULL OR run = ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![link, key, run, limit], |r| {
            let dec = |s: Option<String>| s.and_then(|s| Value::decode(&s).ok());
            let key_text = |s: Option<String>| {
                s.and_then(|s| Key::decode(&s).ok())
                    .map(|k| k.display_text())
            };
            Ok(JournalEntry {
                id: r.get(0)?,
                run: r.get(1)?,
                at: r.get(2)?,
                link: r.get(3)?,
                left_key: key_text(r.get(4)?),
                right_key: key_text(r.get(5)?),
                side: r.get(6)?,
                op: r.get(7)?,
                field: r.get(8)?,
                old: dec(r.get(9)?).map(|v| v.to_json()),
                new: dec(r.get(10)?).map(|v| v.to_json()),
                reason: r.get(11)?,
                status: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The last applied journal entry touching a field of a pair.
    pub fn last_write(
        &self,
        link: &str,
        left_key: &str,
        field: &str,
    ) -> Result<Option<(i64, String, String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT run, at, reason, side FROM journal WHERE link = ?1 AND left_key = ?2
                   AND (field = ?3 OR (field IS NULL AND op = 'create')) AND status = 'applied'
                 ORDER BY id DESC LIMIT 1",
                params![link, left_key, field],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
    }

    // ---- conflicts -----------------------------------------------------------------

    fn read_conflict(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ConflictRowRaw,)> {
        Ok((ConflictRowRaw {
            link: r.get(0)?,
            left_key: r.get(1)?,
            right_key: r.get(2)?,
            unit: r.get(3)?,
            left_value: r.get(4)?,
            right_value: r.get(5)?,
            base_value: r.get(6)?,
            cause: r.get(7)?,
            status: r.get(8)?,
            resolution: r.get(9)?,
            detected_run: r.get(10)?,
        },))
    }

    const CONFLICT_COLS: &'static str = "link, left_key, right_key, unit, left_value, right_value, base_value, cause, status, resolution, detected_run";

    pub fn conflicts(&self, link: Option<&str>) -> Result<Vec<ConflictRow>> {
        let sql = format!(
            "SELECT {} FROM conflicts WHERE (?1 IS NULL OR link = ?1) ORDER BY link, left_key, unit",
            Self::CONFLICT_COLS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![link], Self::read_conflict)?;
        rows.map(|r| r?.0.decode()).collect()
    }

    pub fn conflict(&self, link: &str, left_key: &str, unit: &str) -> Result<Option<ConflictRow>> {
        let sql = format!(
            "SELECT {} FROM conflicts WHERE link = ?1 AND left_key = ?2 AND unit = ?3",
            Self::CONFLICT_COLS
        );
        self.conn
            .prepare_cached(&sql)?
            .query_row(params![link, left_key, unit], Self::read_conflict)
            .optional()?
            .map(|r| r.0.decode())
            .transpose()
    }

    /// Records an open conflict (or refreshes one still open with the same values).
    pub fn upsert_conflict(&mut self, c: &ConflictRow, run: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO conflicts (link, left_key, right_key, unit, left_value, right_value, base_value, cause, status, detected_run, last_seen_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open', ?9, ?9)
                 ON CONFLICT (link, left_key, unit) DO UPDATE SET
                   right_key = excluded.right_key, cause = excluded.cause, last_seen_run = excluded.last_seen_run,
                   status = CASE WHEN left_value = excluded.left_value AND right_value = excluded.right_value THEN status ELSE 'open' END,
                   resolution = CASE WHEN left_value = excluded.left_value AND right_value = excluded.right_value THEN resolution ELSE NULL END,
                   detected_run = CASE WHEN left_value = excluded.left_value AND right_value = excluded.right_value THEN detected_run ELSE excluded.detected_run END,
                   left_value = excluded.left_value, right_value = excluded.right_value, base_value = excluded.base_value",
            )?
            .execute(params![
                c.link,
                c.left_key,
                c.right_key,
                c.unit,
                enc_values(&c.left_value),
                enc_values(&c.right_value),
                c.base_value.as_deref().map(enc_values),
                c.cause,
                run
            ])?;
        Ok(())
    }

    pub fn resolve_conflict(
        &mut self,
        link: &str,
        left_key: &str,
        unit: &str,
        value: &[Value],
    ) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE conflicts SET status = 'resolved', resolution = ?4, resolved_at = ?5 WHERE link = ?1 AND left_key = ?2 AND unit = ?3",
            params![link, left_key, unit, enc_values(value), now()],
        )?;
        Ok(n > 0)
    }

    pub fn delete_conflict(&mut self, link: &str, left_key: &str, unit: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "DELETE FROM conflicts WHERE link = ?1 AND left_key = ?2 AND unit = ?3",
            )?
            .execute(params![link, left_key, unit])?;
        Ok(())
    }

    /// Forgets conflicts this run did not see again (someone fixed the data by hand, or
    /// the pair is gone).
    pub fn prune_conflicts(&mut self, link: &str, run: i64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM conflicts WHERE link = ?1 AND last_seen_run < ?2",
            params![link, run],
        )?;
        Ok(())
    }

    // ---- quarantine ----------------------------------------------------------------

    pub fn quarantine(&self, link: Option<&str>) -> Result<Vec<QuarantineRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT link, side, key, field, kind, reason, detected_run FROM quarantine WHERE (?1 IS NULL OR link = ?1) ORDER BY link, key, field",
        )?;
        let rows = stmt.query_map(params![link], |r| {
            let side: String = r.get(1)?;
            Ok(QuarantineRow {
                link: r.get(0)?,
                side: if side == "left" {
                    Side::Left
                } else {
                    Side::Right
                },
                key: r.get(2)?,
                field: r.get(3)?,
                kind: r.get(4)?,
                reason: r.get(5)?,
                detected_run: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Persistent quarantine entries of a link, keyed by (side, encoded key, field).
    pub fn frozen(&self, link: &str) -> Result<std::collections::HashSet<(Side, String, String)>> {
        Ok(self
            .quarantine(Some(link))?
            .into_iter()
            .filter(|q| PERSISTENT_QUARANTINE.contains(&q.kind.as_str()))
            .map(|q| (q.side, q.key, q.field))
            .collect())
    }

    pub fn put_quarantine(&mut self, q: &QuarantineRow, run: i64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO quarantine (link, side, key, field, kind, reason, detected_run, last_seen_run) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT (link, side, key, field, kind) DO UPDATE SET reason = excluded.reason, last_seen_run = excluded.last_seen_run",
            )?
            .execute(params![q.link, q.side.as_str(), q.key, q.field, q.kind, q.reason, run])?;
        Ok(())
    }

    /// Clears findings this run did not make again; persistent kinds stay.
    pub fn prune_quarantine(&mut self, link: &str, run: i64) -> Result<()> {
        self.conn.execute(
            "DELETE FROM quarantine WHERE link = ?1 AND last_seen_run < ?2 AND kind NOT IN ('flapping')",
            params![link, run],
        )?;
        Ok(())
    }

    pub fn release_quarantine(
        &mut self,
        link: &str,
        key: &str,
        field: Option<&str>,
    ) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM quarantine WHERE link = ?1 AND key = ?2 AND (?3 IS NULL OR field = ?3)",
            params![link, key, field],
        )?)
    }
}

struct ConflictRowRaw {
    link: String,
    left_key: String,
    right_key: String,
    unit: String,
    left_value: String,
    right_value: String,
    base_value: Option<String>,
    cause: String,
    status: String,
    resolution: Option<String>,
    detected_run: i64,
}

impl ConflictRowRaw {
    fn decode(self) -> Result<ConflictRow> {
        Ok(ConflictRow {
            link: self.link,
            left_key: self.left_key,
            right_key: self.right_key,
            unit: self.unit,
            left_value: dec_values(&self.left_value)?,
            right_value: dec_values(&self.right_value)?,
            base_value: self.base_value.as_deref().map(dec_values).transpose()?,
            cause: self.cause,
            status: self.status,
            resolution: self.resolution.as_deref().map(dec_values).transpose()?,
            detected_run: self.detected_run,
        })
    }
}

/// What the right scan needs to know about a linked right key.
#[derive(Debug, Clone, Copy)]
pub struct RightLink {
    pub tombstoned: bool,
    pub left_seen: bool,
}

/// A record staged for matching.
#[derive(Debug, Clone)]
pub struct Unlinked {
    pub key: Key,
    pub match_key: Option<String>,
    /// Its external-id column's value (the other side's key as text), if any.
    pub ext_ref: Option<String>,
    pub values: Vec<Value>,
}

impl Unlinked {
    fn decode(key: &str, record: &str) -> Result<Unlinked> {
        Ok(Unlinked {
            key: Key::decode(key).map_err(|e| StateError::Corrupt(e.to_string()))?,
            match_key: None,
            ext_ref: None,
            values: dec_values(record)?,
        })
    }
}
