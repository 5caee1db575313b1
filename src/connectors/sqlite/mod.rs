//! The `sqlite` system kind: a table in a SQLite database file.
//!
//! The file must exist: opening a mistyped path must not create an empty database that
//! would look like every record was deleted. Types map one to one (INTEGER, REAL, TEXT,
//! BLOB, NULL), so values round-trip exactly.

mod settings;
pub use settings::Settings;

use super::{
    BatchResult, ColumnInfo, Connector, ConnectorError, RangeDigest, ReadSpec, Write, WriteOutcome,
    sql::quote_list,
};
use crate::model::{Key, Name, Record, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql};
use std::path::Path;
use std::time::Duration;

pub struct SqliteConnector {
    conn: Connection,
    name: String,
    /// Declared types of each collection's key columns (for [`keys_as_sent`]).
    key_types: std::collections::HashMap<String, Vec<String>>,
}

/// Creates per multi-row `INSERT` (7 columns × 100 rows stays far below SQLite's
/// parameter limit).
const CREATE_CHUNK: usize = 100;

/// Whether SQLite stores these key values exactly as sent, so a create's key is known
/// without reading it back: integers into INTEGER affinity, text into TEXT affinity
/// (SQLite's rules: a declared type containing "INT", or "CHAR", "CLOB", "TEXT").
fn keys_as_sent(declared: &[String], key: &[&Value]) -> bool {
    declared.len() == key.len()
        && declared.iter().zip(key).all(|(t, v)| {
            let t = t.to_ascii_uppercase();
            match v {
                Value::Integer(_) => t.contains("INT"),
                Value::Text(_) => {
                    !t.contains("INT") && ["CHAR", "CLOB", "TEXT"].iter().any(|a| t.contains(a))
                }
                _ => false,
            }
        })
}

/// Fetches look records up by key in chunks of this many, one statement per chunk.
const FETCH_CHUNK: usize = 400;

impl SqliteConnector {
    /// Opens an existing database file for reading and writing.
    ///
    /// # Errors
    /// The file does not exist or is not a readable SQLite database.
    pub fn open(name: &str, path: &Path) -> Result<SqliteConnector, ConnectorError> {
        let open_err = |e: rusqlite::Error| ConnectorError::Open {
            target: format!("system `{name}` (sqlite file {})", path.display()),
            source: Box::new(e),
        };
        if !path.exists() {
            return Err(ConnectorError::Open {
                target: format!("system `{name}`"),
                source: format!("sqlite file {} does not exist", path.display()).into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        // Touch the schema now so a file that is not a database fails here, by name.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(open_err)?;
        register_row_hash(&conn).map_err(open_err)?;
        Ok(SqliteConnector {
            conn,
            name: name.to_string(),
            key_types: std::collections::HashMap::new(),
        })
    }

    fn query_err(&self, context: String) -> impl FnOnce(rusqlite::Error) -> ConnectorError + '_ {
        move |e| ConnectorError::Query {
            context: format!("system `{}`: {context}", self.name),
            source: Box::new(e),
        }
    }

    fn write_err(&self, spec: &ReadSpec, e: rusqlite::Error) -> ConnectorError {
        ConnectorError::Query {
            context: format!("system `{}`: write to {}", self.name, spec.collection),
            source: Box::new(e),
        }
    }

    fn select_list(spec: &ReadSpec) -> String {
        quote_list(spec.key.iter().chain(&spec.columns), quote)
    }

    fn key_list(spec: &ReadSpec) -> String {
        quote_list(&spec.key, quote)
    }

    /// The `INSERT` for a create that sends `columns`.
    fn insert_sql(table: &str, spec: &ReadSpec, columns: &[&Name]) -> String {
        if columns.is_empty() {
            format!(
                "INSERT INTO {table} DEFAULT VALUES RETURNING {}",
                Self::key_list(spec)
            )
        } else {
            format!(
                "INSERT INTO {table} ({}) VALUES ({}) RETURNING {}",
                quote_list(columns, quote),
                vec!["?"; columns.len()].join(", "),
                Self::key_list(spec)
            )
        }
    }

    fn apply_one(
        &self,
        table: &str,
        spec: &ReadSpec,
        write: &Write,
        inserts: &mut InsertSql,
    ) -> rusqlite::Result<WriteOutcome> {
        match write {
            Write::Create { values } => {
                let sql = inserts.for_columns(values, |cols| Self::insert_sql(table, spec, cols));
                let mut stmt = self.conn.prepare_cached(sql)?;
                let params = rusqlite::params_from_iter(values.iter().map(|(_, v)| v));
                let key = stmt.query_row(params, |row| {
                    (0..spec.key.len())
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?;
                Ok(WriteOutcome::Created(Key(key)))
            }
            conditional => {
                let sql = super::sql::conditional_write_sql(
                    &SqliteDialect,
                    table,
                    &spec.key,
                    conditional,
                )
                .expect("an update or a delete");
                let (set, key, expect) =
                    super::sql::conditional_parts(conditional).expect("an update or a delete");
                let params: Vec<&dyn ToSql> = set
                    .iter()
                    .map(|(_, v)| v as &dyn ToSql)
                    .chain(key.0.iter().map(|v| v as &dyn ToSql))
                    .chain(expect.iter().map(|(_, v)| v as &dyn ToSql))
                    .collect();
                let n = self.conn.prepare_cached(&sql)?.execute(params.as_slice())?;
                Ok(if n == 0 {
                    WriteOutcome::Stale
                } else {
                    WriteOutcome::Applied
                })
            }
        }
    }
}

/// SQLite's conditional writes: `?` parameters, `IS` so that NULL read means NULL
/// expected.
struct SqliteDialect;

impl super::sql::Dialect for SqliteDialect {
    fn assign(&self, column: &str, _n: usize) -> String {
        format!("{} = ?", quote(column))
    }
    fn still_holds(&self, column: &str, _n: usize) -> String {
        format!("{} IS ?", quote(column))
    }
}

fn quote(ident: &str) -> String {
    super::sql::quote_ident(ident, '"')
}

/// `schema.table` becomes `"schema"."table"`.
fn quote_table(collection: &str) -> String {
    super::sql::quote_collection(collection, '"')
}

/// Whether a failed statement is this record's fault (it can be quarantined and the
/// batch can go on) rather than the database's.
/// A column's type affinity, by SQLite's rules (its declared type's name decides).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    fn of(declared: &str) -> Affinity {
        let t = declared.to_ascii_uppercase();
        if t.contains("INT") {
            Affinity::Integer
        } else if ["CHAR", "CLOB", "TEXT"].iter().any(|s| t.contains(s)) {
            Affinity::Text
        } else if t.is_empty() || t.contains("BLOB") {
            Affinity::Blob
        } else if ["REAL", "FLOA", "DOUB"].iter().any(|s| t.contains(s)) {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }

    /// Whether a value written to a column of this affinity reads back equal to itself:
    /// text into a numeric column may become a number, an integer beyond 2^53 into a
    /// REAL one loses digits, a decimal or a date written as text reads back as text.
    fn keeps(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null | Value::Blob(_)) | (Affinity::Blob, _) => true,
            (Affinity::Text, Value::Text(_)) => true,
            (
                Affinity::Integer | Affinity::Numeric,
                Value::Integer(_) | Value::Bool(_) | Value::Real(_),
            ) => true,
            (Affinity::Real, Value::Real(_)) => true,
            (Affinity::Real, Value::Integer(i)) => i.unsigned_abs() <= 1 << 53,
            _ => false,
        }
    }
}

/// What a table does to what it is given: whether it has triggers, and per column its
/// affinity and whether the table fills it itself (a default, a generated column).
struct Storage {
    triggers: bool,
    columns: Vec<(String, Affinity, bool)>,
}

impl Storage {
    /// Whether this write is stored exactly as sent, so that reading it back would tell
    /// nothing: no trigger, every value kept by its column's affinity, and (for a create)
    /// no column of the link's left out that the table would fill.
    fn as_sent(&self, spec: &ReadSpec, write: &Write) -> bool {
        if self.triggers {
            return false;
        }
        let column = |name: &str| self.columns.iter().find(|(n, ..)| n == name);
        let kept = |values: &[(Name, Value)]| {
            values
                .iter()
                .all(|(c, v)| column(c).is_some_and(|(_, a, _)| a.keeps(v)))
        };
        match write {
            Write::Create { values } => {
                kept(values)
                    && spec.columns.iter().all(|c| {
                        values.iter().any(|(sent, _)| **sent == **c)
                            || column(c).is_some_and(|(.., filled)| !filled)
                    })
            }
            Write::Update { set, .. } => kept(set),
            Write::Delete { .. } => true,
        }
    }
}

/// Why SQLite cannot store a value this write sets, if it cannot: a NaN real would be
/// stored as NULL, silently.
fn unstorable(write: &Write) -> Option<String> {
    let values = match write {
        Write::Create { values } => values,
        Write::Update { set, .. } => set,
        Write::Delete { .. } => return None,
    };
    values.iter().find_map(|(column, v)| {
        matches!(v, Value::Real(r) if r.is_nan()).then(|| {
            format!("column `{column}`: SQLite cannot store NaN (it would keep NULL instead)")
        })
    })
}

fn is_record_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            matches!(f.code, ConstraintViolation | TypeMismatch | TooBig)
        }
        rusqlite::Error::QueryReturnedNoRows => true,
        _ => false,
    }
}

fn read_record(row: &rusqlite::Row<'_>, spec: &ReadSpec) -> rusqlite::Result<Record> {
    let key_len = spec.key.len();
    let total = key_len + spec.columns.len();
    let mut key = Vec::with_capacity(key_len);
    let mut values = Vec::with_capacity(total - key_len);
    let mut defect = None;
    for i in 0..total {
        let value = match row.get_ref(i)? {
            // SQLite keeps whatever bytes it was given as TEXT; read lossily, they would
            // arrive elsewhere with U+FFFD in place of the bytes.
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(text) => Value::Text(text.to_owned()),
                Err(_) => {
                    let column = spec
                        .key
                        .iter()
                        .chain(&spec.columns)
                        .nth(i)
                        .map_or("?", String::as_str);
                    defect.get_or_insert_with(|| format!(
                        "column `{column}` holds text that is not valid UTF-8, which would arrive altered (U+FFFD in place of its bytes); fix the value at its source"
                    ));
                    Value::Text(String::from_utf8_lossy(t).into_owned())
                }
            },
            other => <Value as rusqlite::types::FromSql>::column_result(other)?,
        };
        if i < key_len {
            key.push(value);
        } else {
            values.push(value);
        }
    }
    let mut record = Record::new(Key(key), values);
    record.defect = defect;
    Ok(record)
}

impl Connector for SqliteConnector {
    fn identity(&mut self) -> Result<String, ConnectorError> {
        let path: String = self
            .conn
            .query_row(
                "SELECT file FROM pragma_database_list WHERE name = 'main'",
                [],
                |r| r.get(0),
            )
            .map_err(self.query_err("read its file name".into()))?;
        let canonical = std::fs::canonicalize(&path).map_or(path, |p| p.display().to_string());
        Ok(format!("sqlite file {canonical}"))
    }

    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError> {
        let (schema, table) = match collection.split_once('.') {
            Some((s, t)) => (quote(s), t),
            None => ("main".to_string(), collection),
        };
        // A lone INTEGER PRIMARY KEY is the rowid: SQLite assigns it.
        let sql = format!(
            "SELECT name, type, \"notnull\", pk, dflt_value IS NOT NULL
                    OR (pk = 1 AND upper(type) = 'INTEGER'
                        AND (SELECT count(*) FROM {schema}.pragma_table_info(?1) WHERE pk > 0) = 1)
               FROM {schema}.pragma_table_info(?1)"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(self.query_err(format!("describe {collection}")))?;
        let cols = stmt
            .query_map([table], |r| {
                Ok(ColumnInfo {
                    name: r.get(0)?,
                    declared_type: r.get(1)?,
                    not_null: r.get::<_, i64>(2)? != 0,
                    primary_key: r.get::<_, i64>(3)? != 0,
                    unique: false,
                    has_default: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<ColumnInfo>>>())
            .map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: describe {collection}", self.name),
                source: Box::new(e),
            })?;
        if cols.is_empty() {
            return Err(ConnectorError::NoCollection(format!(
                "{}.{collection}",
                self.name
            )));
        }
        let unique_sql = format!(
            "SELECT ii.name FROM {schema}.pragma_index_list(?1) il, {schema}.pragma_index_info(il.name) ii
              WHERE il.\"unique\" = 1 GROUP BY il.name HAVING count(*) = 1"
        );
        let unique: Vec<String> = self
            .conn
            .prepare(&unique_sql)
            .and_then(|mut st| st.query_map([table], |r| r.get(0))?.collect())
            .map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: describe {collection}", self.name),
                source: Box::new(e),
            })?;
        let pk_cols = cols.iter().filter(|c| c.primary_key).count();
        Ok(cols
            .into_iter()
            .map(|mut c| {
                c.unique = unique.contains(&c.name) || (c.primary_key && pk_cols == 1);
                c
            })
            .collect())
    }

    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError> {
        let mut bound: Vec<&Value> = Vec::new();
        let filter = super::sql::scan_filter(spec, quote, &mut |v| {
            // The values live in `spec`, which outlives the statement.
            bound.push(v);
            format!("?{}", bound.len())
        });
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {}",
            Self::select_list(spec),
            quote_table(&spec.collection),
            Self::key_list(spec)
        );
        let ctx = format!("scan {}", spec.collection);
        let mut stmt = self.conn.prepare(&sql).map_err(|e| ConnectorError::Query {
            context: format!("system `{}`: {ctx}", self.name),
            source: Box::new(e),
        })?;
        let params: Vec<&dyn ToSql> = bound.iter().map(|v| *v as &dyn ToSql).collect();
        let mut rows = stmt
            .query(params.as_slice())
            .map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: {ctx}", self.name),
                source: Box::new(e),
            })?;
        let mut batches = super::ScanBatches::new(batch_size, consumer);
        loop {
            let row = rows.next().map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: {ctx}", self.name),
                source: Box::new(e),
            })?;
            let Some(row) = row else { break };
            batches.push(read_record(row, spec).map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: {ctx}", self.name),
                source: Box::new(e),
            })?)?;
        }
        batches.finish()
    }

    fn digests(
        &mut self,
        spec: &ReadSpec,
        bounds: &[Key],
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        let mut bound: Vec<Value> = Vec::new();
        let columns = Self::select_list(spec);
        let bucket = super::sql::case_bucket(spec, quote, bounds, &mut |v| {
            bound.push(v.clone());
            format!("?{}", bound.len())
        });
        let sql = super::sql::digest_sql(
            &quote_table(&spec.collection),
            &bucket,
            &format!("syncline_row_hash({columns})"),
        );
        let ctx = format!("digest {}", spec.collection);
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(self.query_err(ctx.clone()))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(bound.iter()), |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?.to_string(),
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: {ctx}", self.name),
                source: Box::new(e),
            })?;
        Ok(super::sql::digests_from(bounds.len() + 1, rows))
    }

    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {})",
            quote_table(&spec.collection)
        );
        let any: bool = self
            .conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(self.query_err(format!("read {}", spec.collection)))?;
        Ok(!any)
    }

    fn count(&mut self, spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        let sql = format!("SELECT count(*) FROM {}", quote_table(&spec.collection));
        let n: i64 = self
            .conn
            .query_row(&sql, [], |r| r.get(0))
            .map_err(self.query_err(format!("count {}", spec.collection)))?;
        Ok(u64::try_from(n).ok())
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        let mut out = Vec::with_capacity(keys.len());
        let row_value = format!("({})", vec!["?"; spec.key.len()].join(", "));
        for chunk in keys.chunks(FETCH_CHUNK) {
            let sql = format!(
                "SELECT {} FROM {} WHERE ({}) IN (VALUES {})",
                Self::select_list(spec),
                quote_table(&spec.collection),
                Self::key_list(spec),
                vec![row_value.as_str(); chunk.len()].join(", ")
            );
            let params: Vec<&dyn ToSql> = chunk
                .iter()
                .flat_map(|k| k.0.iter().map(|v| v as &dyn ToSql))
                .collect();
            let result = self
                .conn
                .prepare_cached(&sql)
                .and_then(|mut stmt| {
                    stmt.query_map(params.as_slice(), |row| read_record(row, spec))?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(|e| ConnectorError::Query {
                    context: format!("system `{}`: fetch from {}", self.name, spec.collection),
                    source: Box::new(e),
                })?;
            out.extend(result);
        }
        Ok(out)
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        let table = quote_table(&spec.collection);
        let key_types = self
            .key_types(spec)
            .map_err(self.query_err(format!("describe {}", spec.collection)))?;
        let name = self.name.clone();
        let fail = |e: rusqlite::Error| ConnectorError::Query {
            context: format!("system `{name}`: write to {}", spec.collection),
            source: Box::new(e),
        };
        // IMMEDIATE takes the write lock up front, so a busy database fails (after
        // busy_timeout) before anything of the batch is written.
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(fail)?;
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut inserts = InsertSql::default();
        let mut runs = super::sql::create_runs(writes, CREATE_CHUNK)
            .into_iter()
            .peekable();
        let mut next = 0;
        while next < writes.len() {
            // Creates whose keys are among their values go many per statement; if one is
            // refused, the statement is undone alone and its creates go one by one.
            if let Some(run) = runs.next_if(|r| r.start == next)
                && writes[run.clone()].iter().all(|w| unstorable(w).is_none())
            {
                let keys = Self::sent_keys(spec, &key_types, &writes[run.clone()]);
                if let Some(keys) = keys.filter(|k| k.len() > 1) {
                    match self.insert_many(&table, &writes[run.clone()]) {
                        Ok(()) => {
                            outcomes.extend(keys.into_iter().map(WriteOutcome::Created));
                            crate::fault::point("mid_batch");
                            next = run.end;
                            continue;
                        }
                        Err(e) if is_record_error(&e) && !self.conn.is_autocommit() => {}
                        Err(e) => {
                            let _ = self.conn.execute_batch("ROLLBACK");
                            return Err(fail(e));
                        }
                    }
                }
            }
            let write = &writes[next];
            next += 1;
            if let Some(why) = unstorable(write) {
                outcomes.push(WriteOutcome::Rejected(why));
                continue;
            }
            // No savepoint per write: a statement that fails on a constraint is undone
            // by SQLite alone (statement rollback), and the transaction goes on.
            match self.apply_one(&table, spec, write, &mut inserts) {
                Ok(outcome) => {
                    outcomes.push(outcome);
                    crate::fault::point("mid_batch");
                }
                Err(e) if is_record_error(&e) && !self.conn.is_autocommit() => {
                    outcomes.push(WriteOutcome::Rejected(e.to_string()));
                }
                Err(e) => {
                    // Includes a constraint declared ON CONFLICT ROLLBACK, which ended the
                    // transaction: the batch as a whole failed, nothing of it stays.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(fail(e));
                }
            }
        }
        // Read back inside the transaction, which holds the database's write lock: what
        // a trigger, a default or a column's affinity may have made of the values. A
        // write SQLite stores exactly as sent is not read back (see `Storage`).
        let storage = match self.storage(spec) {
            Ok(storage) => storage,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(self.write_err(spec, e));
            }
        };
        let keys =
            BatchResult::written_keys_where(writes, &outcomes, |w| !storage.as_sent(spec, w));
        let stored = match self.fetch(spec, &keys) {
            Ok(stored) => stored,
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(self.write_err(spec, e));
        }
        Ok(BatchResult::with_stored(writes, outcomes, stored))
    }
}

impl SqliteConnector {
    /// How the collection stores what it is given, looked up per batch (a trigger may
    /// come or go between batches; the columns are read with it, cheaply).
    fn storage(&mut self, spec: &ReadSpec) -> rusqlite::Result<Storage> {
        let (schema, table) = match spec.collection.split_once('.') {
            Some((s, t)) => (quote(s), t),
            None => ("main".to_string(), spec.collection.as_str()),
        };
        let triggers: i64 = self.conn.query_row(
            &format!("SELECT count(*) FROM {schema}.sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 COLLATE NOCASE"),
            [table],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT name, type, dflt_value IS NOT NULL OR hidden <> 0 FROM {schema}.pragma_table_xinfo(?1)"
        ))?;
        let columns = stmt
            .query_map([table], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Affinity::of(&r.get::<_, String>(1)?),
                    r.get::<_, bool>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Storage {
            triggers: triggers > 0,
            columns,
        })
    }

    /// The declared types of `spec`'s key columns, looked up once per collection.
    fn key_types(&mut self, spec: &ReadSpec) -> rusqlite::Result<Vec<String>> {
        if let Some(types) = self.key_types.get(&spec.collection) {
            return Ok(types.clone());
        }
        let (schema, table) = match spec.collection.split_once('.') {
            Some((s, t)) => (quote(s), t),
            None => ("main".to_string(), spec.collection.as_str()),
        };
        let sql = format!("SELECT type FROM {schema}.pragma_table_info(?) WHERE name = ?");
        let types = spec
            .key
            .iter()
            .map(|k| {
                // A key the table does not declare (`rowid`) has no type: never bulk.
                self.conn
                    .query_row(&sql, [table, k.as_str()], |r| r.get::<_, String>(0))
                    .optional()
                    .map(Option::unwrap_or_default)
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.key_types
            .insert(spec.collection.clone(), types.clone());
        Ok(types)
    }

    /// The keys of a run of creates, when every one sends its key and SQLite keeps it
    /// as sent; `None` otherwise (the creates then read their keys back one by one).
    fn sent_keys(spec: &ReadSpec, key_types: &[String], creates: &[Write]) -> Option<Vec<Key>> {
        creates
            .iter()
            .map(|w| {
                let Write::Create { values } = w else {
                    return None;
                };
                let key = super::sql::sent_key(spec, values)?;
                keys_as_sent(key_types, &key).then(|| Key(key.into_iter().cloned().collect()))
            })
            .collect()
    }

    /// One `INSERT … VALUES (…), (…)` for creates that send the same columns.
    fn insert_many(&self, table: &str, creates: &[Write]) -> rusqlite::Result<()> {
        let Some(Write::Create { values: first }) = creates.first() else {
            return Ok(());
        };
        let tuple = format!("({})", vec!["?"; first.len()].join(", "));
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}",
            quote_list(first.iter().map(|(c, _)| c), quote),
            vec![tuple.as_str(); creates.len()].join(", ")
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let params = creates.iter().flat_map(|w| match w {
            Write::Create { values } => values.iter().map(|(_, v)| v).collect::<Vec<_>>(),
            _ => Vec::new(),
        });
        stmt.execute(rusqlite::params_from_iter(params))?;
        Ok(())
    }
}

/// The last create's `INSERT`, kept while creates send the same columns (they mostly
/// do): building the statement's text per record cost more than running it.
#[derive(Default)]
struct InsertSql {
    columns: Vec<Name>,
    sql: String,
}

impl InsertSql {
    fn for_columns(
        &mut self,
        values: &[(Name, Value)],
        build: impl FnOnce(&[&Name]) -> String,
    ) -> &str {
        let same = self.columns.len() == values.len()
            && self.columns.iter().zip(values).all(|(a, (b, _))| a == b);
        if !same || self.sql.is_empty() {
            let columns: Vec<&Name> = values.iter().map(|(c, _)| c).collect();
            self.sql = build(&columns);
            self.columns = values.iter().map(|(c, _)| c.clone()).collect();
        }
        &self.sql
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(r) => ToSqlOutput::Borrowed(ValueRef::Real(*r)),
            Value::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Value::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Bool(b) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(i64::from(*b))),
            // SQLite has no decimal, date or JSON type: they are stored as their exact
            // text, never as REAL (numeric(12,2) must not lose its cents).
            other => ToSqlOutput::Owned(rusqlite::types::Value::Text(
                other.to_sql_text().unwrap_or_default(),
            )),
        })
    }
}

impl rusqlite::types::FromSql for Value {
    fn column_result(v: ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        Ok(match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    }
}

#[cfg(test)]
mod tests;

/// `syncline_row_hash(a, b, …)`: a 31-bit FNV-1a hash of its arguments' types and bytes,
/// for range digests (SQLite has no hash function of its own). 31 bits, so a range's
/// `SUM` cannot overflow.
fn register_row_hash(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "syncline_row_hash",
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let mut eat = |bytes: &[u8]| {
                for b in bytes {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
            };
            for i in 0..ctx.len() {
                match ctx.get_raw(i) {
                    ValueRef::Null => eat(&[0]),
                    ValueRef::Integer(n) => {
                        eat(&[1]);
                        eat(&n.to_le_bytes());
                    }
                    ValueRef::Real(f) => {
                        eat(&[2]);
                        eat(&f.to_le_bytes());
                    }
                    ValueRef::Text(t) => {
                        eat(&[3]);
                        eat(t);
                    }
                    ValueRef::Blob(b) => {
                        eat(&[4]);
                        eat(b);
                    }
                }
                eat(&[0x1f]);
            }
            Ok((h & 0x7fff_ffff) as i64)
        },
    )
}
