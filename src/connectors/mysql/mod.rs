//! The `mysql` system kind: a table in MySQL or MariaDB.
//!
//! Values travel through the binary protocol and are typed from the column's
//! `information_schema` type. The session runs in strict mode with `time_zone = '+00:00'`,
//! so a value the column cannot hold is refused (and quarantined) instead of silently
//! truncated, and timestamps mean UTC. Creates use `INSERT … RETURNING` where the server
//! has it (MariaDB ≥ 10.5), else one insert per row with `LAST_INSERT_ID()`.

mod settings;
pub use settings::Settings;

mod tls;

use super::{
    BatchResult, ColumnInfo, Connector, ConnectorError, ReadSpec, Write, WriteOutcome,
    sql::quote_list,
};
use super::{RangeDigest, SystemError};
use crate::model::value::{decimal_fits, parse_naive_timestamp, parse_timestamptz};
use crate::model::{Key, Name, Record, Value};
use chrono::{Datelike, Timelike};
use mysql::prelude::Queryable;
use mysql::{Conn, Opts, TxOpts};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Decimal { precision: u32, scale: u32 },
    Bool,
    Date,
    DateTime,
    Json,
    Uuid,
    Binary,
    Text,
}

#[derive(Debug, Clone)]
struct MyColumn {
    name: String,
    column_type: String,
    kind: Kind,
    not_null: bool,
    primary_key: bool,
    unique: bool,
    auto_increment: bool,
    /// A default, auto-increment or a generated column.
    has_default: bool,
}

pub struct MysqlConnector {
    conn: Conn,
    name: String,
    url: String,
    returning: bool,
    columns: HashMap<String, Vec<MyColumn>>,
}

const CREATE_CHUNK: usize = 1000;

fn quote(ident: &str) -> String {
    super::sql::quote_ident(ident, '`')
}

fn quote_table(collection: &str) -> String {
    super::sql::quote_collection(collection, '`')
}

/// A value as compared against a column: the server converts text to the column's
/// type; a zoned instant goes as its UTC wall time, as the connection reads and writes
/// them.
fn compared(value: &Value) -> mysql::Value {
    match value {
        Value::Integer(n) => mysql::Value::Int(*n),
        Value::TimestampTz(t) => {
            mysql::Value::from(t.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string())
        }
        other => mysql::Value::from(other.to_sql_text().unwrap_or_default()),
    }
}

/// A driver error as a sentence: the crate's own `Display` wraps every message in its
/// variant's name (`CodecError { IO error: … }`).
fn message(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(m) => format!("{} (error {})", m.message, m.code),
        mysql::Error::IoError(io) => format!("the connection failed: {io}"),
        mysql::Error::CodecError(c) => format!("the connection failed: {c}"),
        mysql::Error::DriverError(d) => d.to_string(),
        mysql::Error::UrlError(u) => format!("the URL is not valid: {u}"),
        mysql::Error::TlsError(t) => format!("TLS failed: {t}"),
        other => other.to_string(),
    }
}

/// Errors that are one record's fault: bad value, NULL in NOT NULL, duplicate key,
/// out of range, too long, foreign key, CHECK constraint.
fn is_record_error(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(m) if matches!(m.code,
        1048 | 1062 | 1264 | 1265 | 1292 | 1366 | 1406 | 1411 | 1451 | 1452 | 1690 | 3819 | 4025 | 1364 | 1367))
}

/// Whether the connection went (dropped, or ended by the server).
fn is_lost(e: &mysql::Error) -> bool {
    match e {
        mysql::Error::IoError(_) | mysql::Error::CodecError(_) => true,
        mysql::Error::MySqlError(m) => matches!(m.code, 2006 | 2013 | 1927),
        _ => false,
    }
}

/// A failure that may pass: a lock wait that timed out, a deadlock, or the driver's own
/// trouble with the connection.
fn is_transient(e: &mysql::Error) -> bool {
    match e {
        mysql::Error::DriverError(_) => true,
        mysql::Error::MySqlError(m) => matches!(m.code, 1205 | 1213),
        _ => false,
    }
}

/// The driver's error, classified, as a sentence.
fn system_error(e: mysql::Error) -> SystemError {
    SystemError::classified(message(&e), is_lost(&e), is_transient(&e), e)
}

impl Kind {
    fn of(data_type: &str, column_type: &str) -> Kind {
        let ct = column_type.to_ascii_lowercase();
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" if ct.starts_with("tinyint(1)") => Kind::Bool,
            "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" => Kind::Int,
            "float" | "double" | "real" => Kind::Float,
            "decimal" | "numeric" => {
                let (p, s) = ct
                    .split_once('(')
                    .and_then(|(_, rest)| {
                        rest.trim_end_matches(|c: char| !c.is_ascii_digit())
                            .split_once(',')
                    })
                    .and_then(|(p, s)| Some((p.trim().parse().ok()?, s.trim().parse().ok()?)))
                    .unwrap_or((10, 0));
                Kind::Decimal {
                    precision: p,
                    scale: s,
                }
            }
            "date" => Kind::Date,
            "datetime" | "timestamp" => Kind::DateTime,
            "json" => Kind::Json,
            "uuid" => Kind::Uuid,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Kind::Binary
            }
            _ => Kind::Text,
        }
    }

    fn read(self, v: mysql::Value) -> Value {
        use mysql::Value as M;
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|e| e.into_bytes());
        match (self, v) {
            (_, M::NULL) => Value::Null,
            (Kind::Bool, M::Int(i)) => Value::Bool(i != 0),
            (_, M::Int(i)) => Value::Integer(i),
            (_, M::UInt(u)) => i64::try_from(u)
                .map(Value::Integer)
                .unwrap_or_else(|_| Value::Numeric(u.to_string())),
            (_, M::Float(f)) => Value::Real(f64::from(f)),
            (_, M::Double(f)) => Value::Real(f),
            (Kind::Date, M::Date(y, m, d, ..)) => {
                chrono::NaiveDate::from_ymd_opt(y.into(), m.into(), d.into())
                    .map_or_else(|| Value::Text(format!("{y:04}-{m:02}-{d:02}")), Value::Date)
            }
            (_, M::Date(y, m, d, h, mi, s, us)) => {
                chrono::NaiveDate::from_ymd_opt(y.into(), m.into(), d.into())
                    .and_then(|date| date.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
                    .map_or_else(
                        || {
                            Value::Text(format!(
                                "{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
                            ))
                        },
                        Value::Timestamp,
                    )
            }
            (_, M::Time(neg, d, h, m, s, us)) => {
                let hours = d * 24 + u32::from(h);
                Value::Text(format!(
                    "{}{hours:02}:{m:02}:{s:02}{}",
                    if neg { "-" } else { "" },
                    if us > 0 {
                        format!(".{us:06}")
                    } else {
                        String::new()
                    }
                ))
            }
            (Kind::Binary, M::Bytes(b)) => Value::Blob(b),
            (kind, M::Bytes(b)) => match text(b) {
                Err(bytes) => Value::Blob(bytes),
                Ok(t) => match kind {
                    Kind::Decimal { .. } => Value::Numeric(t),
                    Kind::Int => t.parse().map(Value::Integer).unwrap_or(Value::Text(t)),
                    Kind::Float => t.parse().map(Value::Real).unwrap_or(Value::Text(t)),
                    Kind::Json => serde_json::from_str(&t)
                        .map(Value::Json)
                        .unwrap_or(Value::Text(t)),
                    Kind::Uuid => Value::Uuid(t.to_lowercase()),
                    Kind::Date => chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                        .map(Value::Date)
                        .unwrap_or(Value::Text(t)),
                    Kind::DateTime => parse_naive_timestamp(&t)
                        .map(Value::Timestamp)
                        .unwrap_or(Value::Text(t)),
                    _ => Value::Text(t),
                },
            },
        }
    }

    /// Our value as a parameter for this column, or why the column cannot hold it
    /// exactly (a decimal with more digits than the column keeps would be rounded).
    fn param(self, v: &Value) -> Result<mysql::Value, String> {
        use mysql::Value as M;
        if let Kind::Decimal { precision, scale } = self
            && let Some(d) = v.as_decimal()
        {
            if !decimal_fits(&d, precision as usize, scale as usize) {
                return Err(format!(
                    "{d} does not fit decimal({precision},{scale}) without rounding"
                ));
            }
            return Ok(M::Bytes(d.into_bytes()));
        }
        let datetime = |n: chrono::NaiveDateTime| {
            M::Date(
                n.year() as u16,
                n.month() as u8,
                n.day() as u8,
                n.hour() as u8,
                n.minute() as u8,
                n.second() as u8,
                n.nanosecond() / 1000,
            )
        };
        Ok(match v {
            Value::Null => M::NULL,
            Value::Integer(i) => M::Int(*i),
            Value::Real(r) => M::Double(*r),
            Value::Bool(b) => M::Int(i64::from(*b)),
            Value::Blob(b) => M::Bytes(b.clone()),
            Value::Date(d) => M::Date(d.year() as u16, d.month() as u8, d.day() as u8, 0, 0, 0, 0),
            Value::Timestamp(t) => datetime(*t),
            Value::TimestampTz(t) => datetime(t.naive_utc()),
            Value::Text(t) if self == Kind::DateTime => match parse_timestamptz(t) {
                Some(z) => datetime(z.naive_utc()),
                None => M::Bytes(t.clone().into_bytes()),
            },
            other => M::Bytes(other.to_sql_text().unwrap_or_default().into_bytes()),
        })
    }
}

impl MysqlConnector {
    /// Connects and prepares the session.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login.
    pub fn open(name: &str, url: &str) -> Result<MysqlConnector, ConnectorError> {
        let (conn, returning) = Self::connect(name, url)?;
        Ok(MysqlConnector {
            conn,
            name: name.to_string(),
            url: url.to_string(),
            returning,
            columns: HashMap::new(),
        })
    }

    fn connect(name: &str, url: &str) -> Result<(Conn, bool), ConnectorError> {
        let open_err = |e: String| ConnectorError::Open {
            target: format!("system `{name}` (mysql)"),
            source: e.into(),
        };
        // The parser's message may quote the URL, password included: say what is wrong
        // without it.
        let tls = tls::split(url).map_err(open_err)?;
        let opts = Opts::from_url(&tls.driver_url).map_err(|_| {
            open_err("the url is not a valid mysql://user:password@host:port/database URL".into())
        })?;
        // FOUND_ROWS: an UPDATE reports the rows its WHERE matched, so a conditional
        // write that matched is never mistaken for a stale one.
        let opts = mysql::OptsBuilder::from_opts(opts)
            .ssl_opts(tls.ssl)
            .additional_capabilities(mysql::consts::CapabilityFlags::CLIENT_FOUND_ROWS);
        let mut conn = Conn::new(opts).map_err(|e| open_err(message(&e)))?;
        conn.query_drop(
            "SET SESSION time_zone = '+00:00', SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
        )
        .map_err(|e| open_err(message(&e)))?;
        let version: String = conn
            .query_first("SELECT VERSION()")
            .map_err(|e| open_err(message(&e)))?
            .unwrap_or_default();
        // MariaDB 10.5 added INSERT … RETURNING.
        let returning = version.to_ascii_lowercase().contains("mariadb") && {
            let mut parts = version
                .split(['.', '-'])
                .filter_map(|p| p.parse::<u32>().ok());
            let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            (major, minor) >= (10, 5)
        };
        Ok((conn, returning))
    }

    fn query_err(&self, context: &str, e: mysql::Error) -> ConnectorError {
        ConnectorError::query(
            format!("system `{}`: {context}", self.name),
            system_error(e),
        )
    }

    fn columns_of(&mut self, collection: &str) -> Result<Vec<MyColumn>, ConnectorError> {
        if let Some(c) = self.columns.get(collection) {
            return Ok(c.clone());
        }
        let (schema, table) = match collection.split_once('.') {
            Some((s, t)) => (Some(s.to_string()), t.to_string()),
            None => (None, collection.to_string()),
        };
        // Two plain queries: MariaDB 10.11 crashed (signal 11, in the cleanup of a failed
        // temporary table) running information_schema subqueries correlated per column.
        let rows: Vec<(String, String, String, String, String, String, bool)> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, COLUMN_KEY, EXTRA,
                        COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%' OR EXTRA LIKE '%GENERATED%'
                   FROM information_schema.COLUMNS
                  WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&schema, &table),
            )
            .map_err(|e| self.query_err(&format!("describe {collection}"), e))?;
        if rows.is_empty() {
            return Err(ConnectorError::NoCollection(format!(
                "{}.{collection}",
                self.name
            )));
        }
        let unique_indexes: Vec<(String, String)> = self
            .conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
                  WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0",
                (&schema, &table),
            )
            .map_err(|e| self.query_err(&format!("describe the indexes of {collection}"), e))?;
        // A column is unique on its own when a unique index has it as its only column.
        let mut index_columns: HashMap<&str, Vec<&str>> = HashMap::new();
        for (index, column) in &unique_indexes {
            index_columns.entry(index).or_default().push(column);
        }
        let unique_alone: std::collections::HashSet<&str> = index_columns
            .values()
            .filter_map(|columns| match columns.as_slice() {
                [only] => Some(*only),
                _ => None,
            })
            .collect();
        let cols: Vec<MyColumn> = rows
            .into_iter()
            .map(
                |(name, column_type, data_type, nullable, key, extra, has_default)| MyColumn {
                    has_default,
                    unique: unique_alone.contains(name.as_str()),
                    kind: Kind::of(&data_type, &column_type),
                    name,
                    column_type,
                    not_null: nullable == "NO",
                    primary_key: key == "PRI",
                    auto_increment: extra.contains("auto_increment"),
                },
            )
            .collect();
        self.columns.insert(collection.to_string(), cols.clone());
        Ok(cols)
    }

    fn spec_columns(&mut self, spec: &ReadSpec) -> Result<Vec<MyColumn>, ConnectorError> {
        let all = self.columns_of(&spec.collection)?;
        super::sql::pick_columns(&self.name, spec, &all, |c| &c.name)
    }

    fn to_record(row: mysql::Row, cols: &[MyColumn], key_len: usize) -> Record {
        let mut values: Vec<Value> = row
            .unwrap()
            .into_iter()
            .zip(cols)
            .map(|(v, c)| c.kind.read(v))
            .collect();
        let rest = values.split_off(key_len);
        Record::new(Key(values), rest)
    }

    /// The new record's key from a `RETURNING key, …` row.
    fn returned_key(all: &[MyColumn], spec: &ReadSpec, row: mysql::Row) -> Key {
        Key(row
            .unwrap()
            .into_iter()
            .zip(&spec.key)
            .map(|(v, name)| Self::kind_of(all, name).read(v))
            .collect())
    }

    fn kind_of(all: &[MyColumn], name: &str) -> Kind {
        all.iter()
            .find(|c| c.name == name)
            .map_or(Kind::Text, |c| c.kind)
    }

    fn params(all: &[MyColumn], pairs: &[(Name, Value)]) -> Result<Vec<mysql::Value>, String> {
        pairs
            .iter()
            .map(|(c, v)| {
                Self::kind_of(all, c)
                    .param(v)
                    .map_err(|e| format!("{c}: {e}"))
            })
            .collect()
    }

    fn key_params(
        all: &[MyColumn],
        spec: &ReadSpec,
        key: &Key,
    ) -> Result<Vec<mysql::Value>, String> {
        spec.key
            .iter()
            .zip(&key.0)
            .map(|(c, v)| Self::kind_of(all, c).param(v))
            .collect()
    }

    /// One batch in one transaction. The flag says whether the failure happened before
    /// COMMIT was sent (only then is a retry safe).
    fn apply_once(
        &mut self,
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<BatchResult, (mysql::Error, bool)> {
        let all = self
            .columns
            .get(&spec.collection)
            .cloned()
            .unwrap_or_default();
        let table = quote_table(&spec.collection);
        let key_list = quote_list(&spec.key, quote);
        let returning = self.returning;
        let auto_key = spec.key.len() == 1
            && all
                .iter()
                .any(|c| c.name == spec.key[0] && c.auto_increment);
        let retry = |e: mysql::Error| (e, true);
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .map_err(retry)?;
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];

        for run in super::sql::create_runs(writes, CREATE_CHUNK) {
            let (i, j) = (run.start, run.end);
            let Write::Create { values } = &writes[i] else {
                unreachable!("runs start with a create")
            };
            let cols: Vec<&str> = values.iter().map(|(c, _)| &**c).collect();
            // A whole chunk in one statement when the server returns the new keys;
            // InnoDB undoes a failed statement alone, so a refusal falls back to rows.
            let mut done = false;
            if returning && j - i > 1 && !cols.is_empty() {
                let mut params = Vec::new();
                let mut ok = true;
                for w in &writes[i..j] {
                    let Write::Create { values } = w else {
                        unreachable!()
                    };
                    match Self::params(&all, values) {
                        Ok(p) => params.extend(p),
                        Err(_) => ok = false,
                    }
                }
                if ok {
                    let row = format!("({})", vec!["?"; cols.len()].join(", "));
                    let sql = format!(
                        "INSERT INTO {table} ({}) VALUES {} RETURNING {key_list}",
                        quote_list(cols, quote),
                        vec![row.as_str(); j - i].join(", ")
                    );
                    match tx.exec::<mysql::Row, _, _>(sql, params) {
                        Ok(rows) => {
                            for (n, row) in rows.into_iter().enumerate() {
                                let key = Self::returned_key(&all, spec, row);
                                outcomes[i + n] = Some(WriteOutcome::Created(key));
                            }
                            done = true;
                        }
                        Err(e) if is_record_error(&e) => {}
                        Err(e) => return Err(retry(e)),
                    }
                }
            }
            if !done {
                for n in i..j {
                    let Write::Create { values } = &writes[n] else {
                        continue;
                    };
                    let params = match Self::params(&all, values) {
                        Ok(p) => p,
                        Err(why) => {
                            outcomes[n] = Some(WriteOutcome::Rejected(why));
                            continue;
                        }
                    };
                    let cols_sql = quote_list(values.iter().map(|(c, _)| c), quote);
                    let marks = vec!["?"; values.len()].join(", ");
                    let insert = if values.is_empty() {
                        format!("INSERT INTO {table} () VALUES ()")
                    } else {
                        format!("INSERT INTO {table} ({cols_sql}) VALUES ({marks})")
                    };
                    let result = if returning {
                        tx.exec_first::<mysql::Row, _, _>(
                            format!("{insert} RETURNING {key_list}"),
                            params,
                        )
                        .map(|row| row.map(|r| Self::returned_key(&all, spec, r)))
                    } else {
                        tx.exec_drop(insert, params).map(|()| {
                            if auto_key {
                                tx.last_insert_id()
                                    .map(|id| Key(vec![Value::Integer(id as i64)]))
                            } else {
                                // The key was among the values written.
                                super::sql::sent_key(spec, values)
                                    .map(|key| Key(key.into_iter().cloned().collect()))
                            }
                        })
                    };
                    match result {
                        Ok(Some(key)) => outcomes[n] = Some(WriteOutcome::Created(key)),
                        Ok(None) => {
                            outcomes[n] = Some(WriteOutcome::Rejected(
                                "the new record's key could not be read back".into(),
                            ))
                        }
                        Err(e) if is_record_error(&e) => {
                            outcomes[n] = Some(WriteOutcome::Rejected(message(&e)))
                        }
                        Err(e) => return Err(retry(e)),
                    }
                }
            }
        }

        for (n, write) in writes.iter().enumerate() {
            let prepared = match write {
                Write::Create { .. } => continue,
                conditional => {
                    let sql = super::sql::conditional_write_sql(
                        &MysqlDialect(&all),
                        &table,
                        &spec.key,
                        conditional,
                    )
                    .expect("an update or a delete");
                    let (set, key, expect) =
                        super::sql::conditional_parts(conditional).expect("an update or a delete");
                    Self::params(&all, set)
                        .and_then(|mut p| {
                            p.extend(Self::key_params(&all, spec, key)?);
                            p.extend(Self::params(&all, expect)?);
                            Ok(p)
                        })
                        .map(|p| (sql, p))
                }
            };
            let (sql, params) = match prepared {
                Ok(x) => x,
                Err(why) => {
                    outcomes[n] = Some(WriteOutcome::Rejected(why));
                    continue;
                }
            };
            match tx.exec_drop(sql, params) {
                // Matched rows (CLIENT_FOUND_ROWS), not changed rows.
                Ok(()) => {
                    outcomes[n] = Some(if tx.affected_rows() == 0 {
                        WriteOutcome::Stale
                    } else {
                        WriteOutcome::Applied
                    })
                }
                Err(e) if is_record_error(&e) => {
                    outcomes[n] = Some(WriteOutcome::Rejected(message(&e)))
                }
                Err(e) => return Err(retry(e)),
            }
        }
        let outcomes: Vec<WriteOutcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every write has an outcome"))
            .collect();
        // Read back before COMMIT: InnoDB holds the written rows' locks until then.
        let keys = BatchResult::written_keys(writes, &outcomes);
        let cols =
            super::sql::pick_columns(&self.name, spec, &all, |c| &c.name).unwrap_or_default();
        let mut stored = Vec::with_capacity(keys.len());
        // The keys were just written with these same parameters, so they convert.
        let statements = Self::fetch_statements(&all, spec, &keys).unwrap_or_default();
        for (sql, params) in statements {
            let rows: Vec<mysql::Row> = tx.exec(sql, params).map_err(retry)?;
            stored.extend(
                rows.into_iter()
                    .map(|r| Self::to_record(r, &cols, spec.key.len())),
            );
        }
        tx.commit().map_err(|e| (e, false))?;
        Ok(BatchResult::with_stored(writes, outcomes, stored))
    }

    /// The statements that fetch the records with `keys`, 500 keys each.
    fn fetch_statements(
        all: &[MyColumn],
        spec: &ReadSpec,
        keys: &[Key],
    ) -> Result<Vec<(String, Vec<mysql::Value>)>, String> {
        let tuple = format!("({})", vec!["?"; spec.key.len()].join(", "));
        keys.chunks(500)
            .map(|chunk| {
                let sql = format!(
                    "SELECT {} FROM {} WHERE ({}) IN ({})",
                    quote_list(spec.key.iter().chain(&spec.columns), quote),
                    quote_table(&spec.collection),
                    quote_list(&spec.key, quote),
                    vec![tuple.as_str(); chunk.len()].join(", ")
                );
                let mut params = Vec::new();
                for k in chunk {
                    params.extend(Self::key_params(all, spec, k)?);
                }
                Ok((sql, params))
            })
            .collect()
    }
}

impl Connector for MysqlConnector {
    fn identity(&mut self) -> Result<String, ConnectorError> {
        // MySQL has a server uuid; MariaDB does not, and is named by host, port and
        // server id instead.
        let uuid: Option<String> = self.conn.query_first("SELECT @@server_uuid").ok().flatten();
        let (db, host, port, server_id): (Option<String>, String, u32, u64) = self
            .conn
            .query_first("SELECT DATABASE(), @@hostname, @@port, @@server_id")
            .map_err(|e| self.query_err("read its identity", e))?
            .unwrap_or_default();
        let db = db.unwrap_or_default();
        Ok(match uuid {
            Some(uuid) => format!("mysql server {uuid} database {db}"),
            None => format!("mysql server {host}:{port} (server id {server_id}) database {db}"),
        })
    }

    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError> {
        Ok(self
            .columns_of(collection)?
            .into_iter()
            .map(|c| ColumnInfo {
                name: c.name,
                declared_type: c.column_type,
                not_null: c.not_null,
                primary_key: c.primary_key,
                unique: c.unique,
                has_default: c.has_default,
            })
            .collect())
    }

    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError> {
        let cols = self.spec_columns(spec)?;
        let mut since: Vec<mysql::Value> = Vec::new();
        let filter = super::sql::scan_filter(spec, quote, &mut |v| {
            since.push(compared(v));
            "?".into()
        });
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {}",
            quote_list(spec.key.iter().chain(&spec.columns), quote),
            quote_table(&spec.collection),
            quote_list(&spec.key, quote)
        );
        let name = self.name.clone();
        let err = |e: mysql::Error| {
            ConnectorError::query(
                format!("system `{name}`: scan {}", spec.collection),
                system_error(e),
            )
        };
        // One consistent snapshot; rows stream from the server (unbuffered result).
        let mut tx = self
            .conn
            .start_transaction(
                TxOpts::default()
                    .set_with_consistent_snapshot(true)
                    .set_access_mode(Some(mysql::AccessMode::ReadOnly)),
            )
            .map_err(err)?;
        let count = {
            let result = tx.exec_iter(sql, since).map_err(err)?;
            let mut batches = super::ScanBatches::new(batch_size, consumer);
            for row in result {
                batches.push(Self::to_record(row.map_err(err)?, &cols, spec.key.len()))?;
            }
            batches.finish()?
        };
        tx.commit().map_err(err)?;
        Ok(count)
    }

    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {})",
            quote_table(&spec.collection)
        );
        let any: Option<i64> = self
            .conn
            .query_first(sql)
            .map_err(|e| self.query_err(&format!("read {}", spec.collection), e))?;
        Ok(any.unwrap_or(0) == 0)
    }

    fn digests(
        &mut self,
        spec: &ReadSpec,
        bounds: &[Key],
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        self.spec_columns(spec)?;
        // CRC32 of the row's columns as text, NULL told apart from '' (CHAR(0)).
        let row = spec
            .key
            .iter()
            .chain(&spec.columns)
            .map(|c| format!("IFNULL(CAST({} AS CHAR), CHAR(0))", quote(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut params: Vec<mysql::Value> = Vec::new();
        // An integer key finds its range by `INTERVAL`'s binary search; others by CASE.
        let integers = !bounds.is_empty()
            && spec.key.len() == 1
            && bounds
                .iter()
                .all(|b| matches!(b.0[..], [Value::Integer(_)]));
        let bucket = if integers {
            let list: Vec<String> = bounds.iter().map(|b| b.0[0].to_string()).collect();
            format!("INTERVAL({}, {})", quote(&spec.key[0]), list.join(", "))
        } else {
            super::sql::case_bucket(spec, quote, bounds, &mut |v| {
                params.push(compared(v));
                "?".into()
            })
        };
        let sql = super::sql::digest_sql(
            &quote_table(&spec.collection),
            &bucket,
            &format!("CRC32(CONCAT_WS(CHAR(31), {row}))"),
        );
        let rows: Vec<(i64, i64, String)> = self
            .conn
            .exec_map(
                format!("SELECT r, c, CAST(s AS CHAR) FROM ({sql}) x"),
                params,
                |(r, c, s): (i64, i64, String)| (r, c, s),
            )
            .map_err(|e| self.query_err(&format!("digest {}", spec.collection), e))?;
        Ok(super::sql::digests_from(bounds.len() + 1, rows))
    }

    fn count(&mut self, spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        let sql = format!("SELECT count(*) FROM {}", quote_table(&spec.collection));
        let n: Option<u64> = self
            .conn
            .query_first(sql)
            .map_err(|e| self.query_err(&format!("count {}", spec.collection), e))?;
        Ok(n)
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        let cols = self.spec_columns(spec)?;
        let all = self
            .columns
            .get(&spec.collection)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(keys.len());
        let statements =
            Self::fetch_statements(&all, spec, keys).map_err(|e| ConnectorError::Query {
                context: format!("system `{}`: fetch from {}", self.name, spec.collection),
                source: e.into(),
            })?;
        for (sql, params) in statements {
            let rows: Vec<mysql::Row> = self
                .conn
                .exec(sql, params)
                .map_err(|e| self.query_err(&format!("fetch from {}", spec.collection), e))?;
            out.extend(
                rows.into_iter()
                    .map(|r| Self::to_record(r, &cols, spec.key.len())),
            );
        }
        Ok(out)
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        self.spec_columns(spec)?;
        super::sql::apply_with_retries(self, spec, writes)
    }
}

impl super::sql::RetryableBatches for MysqlConnector {
    fn system(&self) -> &str {
        &self.name
    }

    fn attempt(
        &mut self,
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<BatchResult, super::sql::AttemptFailed> {
        self.apply_once(spec, writes)
            .map_err(|(e, before_commit)| super::sql::AttemptFailed {
                error: system_error(e),
                before_commit,
            })
    }

    fn recover(&mut self) -> Result<(), ConnectorError> {
        if self.conn.ping().is_err() {
            let (conn, returning) = Self::connect(&self.name, &self.url)?;
            self.conn = conn;
            self.returning = returning;
        }
        Ok(())
    }
}

/// MySQL's conditional writes: `?` parameters, null-safe `<=>`; MySQL's `json` compares
/// as a document with the parameter read as JSON (MariaDB's `json` is `longtext`, read
/// and compared as text).
struct MysqlDialect<'c>(&'c [MyColumn]);

impl super::sql::Dialect for MysqlDialect<'_> {
    fn assign(&self, column: &str, _n: usize) -> String {
        format!("{} = ?", quote(column))
    }
    fn still_holds(&self, column: &str, _n: usize) -> String {
        match MysqlConnector::kind_of(self.0, column) {
            Kind::Json => format!("{} <=> CAST(? AS JSON)", quote(column)),
            _ => format!("{} <=> ?", quote(column)),
        }
    }
    fn key_equals(&self, column: &str, _n: usize) -> String {
        format!("{} <=> ?", quote(column))
    }
}

#[cfg(test)]
mod tests;
