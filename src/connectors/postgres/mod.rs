//! The `postgres` system kind: a table or view in a PostgreSQL database.
//!
//! Every value travels as PostgreSQL's own text form (`col::text` out,
//! `CAST($n::text AS coltype)` in), and is typed on our side from the column's catalog
//! type. That keeps numeric, timestamps, uuid, json and enums exact without a binary
//! codec per type, and one code path handles every type PostgreSQL can cast from text.
//! The session runs with `TimeZone = UTC` and ISO dates so the text forms are stable.
//! Bulk creates are the exception: `COPY`'s binary format, for values that have an exact
//! binary form in their column (see [`binary`]); text for the rest.

mod binary;
use super::sql::tls;
mod types;

use super::{
    BatchResult, ColumnInfo, Connector, ConnectorError, ReadSpec, Write, WriteOutcome,
    sql::quote_list,
};
use crate::model::{Key, Name, Record, Value};
use postgres::{Client, IsolationLevel};
use std::collections::HashMap;
use types::{PgColumn, PgKind};

pub struct PostgresConnector {
    client: Client,
    name: String,
    /// Kept to reconnect after a dropped connection; never logged or printed.
    url: String,
    columns: HashMap<String, Vec<PgColumn>>,
    /// Partner fetches by their text, prepared once per connection: a statement sent as
    /// text is parsed and planned again on every batch.
    fetches: HashMap<String, postgres::Statement>,
}

/// Creates are sent in chunks of at most this many rows per statement.
const CREATE_CHUNK: usize = 5000;

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote(ident: &str) -> String {
    super::sql::quote_ident(ident, '"')
}

/// `schema.table` (schema defaults to the connection's search path) → quoted.
fn quote_table(collection: &str) -> String {
    super::sql::quote_collection(collection, '"')
}

/// Where each key column sits among a create's `cols`, and how to read it, when the
/// new row's key is exactly what is sent: every key column is sent and is of a type
/// PostgreSQL stores as given (integers, uuid, text, varchar). Otherwise `None`, and the
/// key comes back from `RETURNING`.
fn copy_key(all: &[PgColumn], spec: &ReadSpec, cols: &[&str]) -> Option<Vec<(usize, PgKind)>> {
    spec.key
        .iter()
        .map(|k| {
            let at = cols.iter().position(|c| c == k)?;
            let col = all.iter().find(|c| &c.name == k)?;
            let stored_as_sent =
                matches!(col.kind, PgKind::Int | PgKind::Uuid) || col.is_plain_text();
            stored_as_sent.then_some((at, col.kind))
        })
        .collect()
}

/// Appends `text` in `COPY`'s text format: backslash, tab, newline and carriage return
/// are escaped; everything else is taken literally.
fn copy_escape(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Rows in `COPY`'s text format.
fn copy_text_rows(chunk: &[&Vec<(Name, Value)>]) -> Vec<u8> {
    let mut data = Vec::with_capacity(chunk.len() * 128);
    for values in chunk {
        for (i, (_, v)) in values.iter().enumerate() {
            if i > 0 {
                data.push(b'\t');
            }
            match v.sql_text() {
                None => data.extend_from_slice(b"\\N"),
                Some(text) => copy_escape(&mut data, &text),
            }
        }
        data.push(b'\n');
    }
    data
}

/// The select list of a `COPY` scan. `COPY` prints each value with its type's output
/// function, which for these types is exactly what `::text` gives (booleans print `t`
/// and `f`, which read back the same); any other type keeps its `::text` cast, since
/// for some (`character(n)`, `inet`) the cast prints differently.
fn copy_out_columns(spec: &ReadSpec, cols: &[PgColumn]) -> String {
    spec.key
        .iter()
        .chain(&spec.columns)
        .zip(cols)
        .map(|(name, col)| {
            let printed_as_cast = col.kind != PgKind::Text || col.is_plain_text();
            if printed_as_cast {
                quote(name)
            } else {
                format!("{}::text", quote(name))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line of `COPY`'s text format (without or with its newline) as a record: fields
/// split on tabs, `\N` is NULL, backslash escapes decoded.
fn copy_line_record(line: &[u8], cols: &[PgColumn], key_len: usize) -> Result<Record, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut fields = line.split(|&b| b == b'\t');
    let mut values = Vec::with_capacity(cols.len());
    for col in cols {
        let field = fields.next().ok_or_else(|| {
            format!(
                "COPY row has fewer fields than the {} asked for",
                cols.len()
            )
        })?;
        let bad = |why: String| format!("column `{}`: {why}", col.name);
        let value = match field {
            b"\\N" => Value::Null,
            // Numbers and times without escapes are read in place: no copy to drop.
            _ if !field.contains(&b'\\') => {
                let text = std::str::from_utf8(field).map_err(|e| bad(e.to_string()))?;
                match col.kind.parse_scalar(text) {
                    Some(value) => value,
                    None => col.kind.parse(Some(text.to_owned())),
                }
            }
            _ => col.kind.parse(Some(copy_unescape(field).map_err(bad)?)),
        };
        values.push(value);
    }
    if fields.next().is_some() {
        return Err(format!(
            "COPY row has more fields than the {} asked for",
            cols.len()
        ));
    }
    let rest = values.split_off(key_len);
    Ok(Record::new(Key(values), rest))
}

/// Decodes one field of `COPY`'s text format: `\b \f \n \r \t \v`, a backslash
/// followed by any other character stands for that character, `\ooo` (octal) and
/// `\xhh` (hex) for a byte.
fn copy_unescape(field: &[u8]) -> Result<String, String> {
    if !field.contains(&b'\\') {
        return std::str::from_utf8(field)
            .map(str::to_owned)
            .map_err(|e| e.to_string());
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(escaped) = bytes.next() else {
            out.push(b'\\');
            break;
        };
        match escaped {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut n = u32::from(escaped - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(n as u8);
            }
            b'x' if bytes.peek().is_some_and(u8::is_ascii_hexdigit) => {
                let mut n = 0u32;
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(d) if d.is_ascii_hexdigit() => {
                            n = n * 16 + (*d as char).to_digit(16).unwrap_or(0);
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(n as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// How a batch's values travel in one statement: one text array per column. Returns
/// `unnest($1::text[], …, $n::text[])` and the names `{prefix}0, …` its columns take.
fn unnest_text_arrays(n: usize, prefix: &str) -> (String, String) {
    let arrays = (1..=n)
        .map(|i| format!("${i}::text[]"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (0..n)
        .map(|i| format!("{prefix}{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    (format!("unnest({arrays})"), names)
}

/// The text arrays of [`unnest_text_arrays`] as statement parameters.
fn array_params(arrays: &[Vec<Option<String>>]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    arrays
        .iter()
        .map(|a| a as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn is_retryable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    matches!(
        e.code().map(|c| c.code()),
        Some("40001" | "40P01" | "57P01" | "08006" | "08003" | "08000")
    ) || e.as_db_error().is_none() && e.code().is_none()
}

/// Data exceptions (class 22) and constraint violations (23) are one record's fault.
/// Whether the connection went: closed, or the server ended the session
/// (`pg_terminate_backend`, a shutdown, a crash).
fn is_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            matches!(
                c.code(),
                "57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006"
            )
        })
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

fn is_record_error(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

impl PostgresConnector {
    /// The records whose keys are in the text arrays `$1…$n`, one array per key column.
    fn fetch_sql(spec: &ReadSpec, cols: &[PgColumn]) -> String {
        let n = spec.key.len();
        let (unnest, names) = unnest_text_arrays(n, "k");
        format!(
            "SELECT {} FROM {} WHERE ({}) IN (SELECT {} FROM {} AS u({}))",
            Self::select_sql(spec),
            quote_table(&spec.collection),
            quote_list(&spec.key, quote),
            (0..n)
                .map(|i| format!("CAST(u.k{i} AS {})", cols[i].cast_type))
                .collect::<Vec<_>>()
                .join(", "),
            unnest,
            names,
        )
    }

    /// Connects and prepares the session.
    ///
    /// # Errors
    /// The server cannot be reached or refuses the login.
    pub fn open(name: &str, url: &str) -> Result<PostgresConnector, ConnectorError> {
        let client = Self::connect(name, url)?;
        Ok(PostgresConnector {
            client,
            name: name.to_string(),
            url: url.to_string(),
            columns: HashMap::new(),
            fetches: HashMap::new(),
        })
    }

    fn connect(name: &str, url: &str) -> Result<Client, ConnectorError> {
        let open_err = |e: postgres::Error| ConnectorError::Open {
            target: format!("system `{name}` (postgres)"),
            source: db_message(&e).into(),
        };
        let mut client = tls::connect(url).map_err(|e| ConnectorError::Open {
            target: format!("system `{name}` (postgres)"),
            source: e.into(),
        })?;
        client
            .batch_execute(&format!(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET bytea_output = 'hex'; SET extra_float_digits = 1;
                 SET application_name = {}",
                quote_literal(&format!("syncline:{name}"))
            ))
            .map_err(open_err)?;
        Ok(client)
    }

    fn query_err(&self, context: &str, e: postgres::Error) -> ConnectorError {
        ConnectorError::query(
            format!("system `{}`: {context}", self.name),
            db_message(&e),
            is_lost(&e),
        )
    }

    fn columns_of(&mut self, collection: &str) -> Result<Vec<PgColumn>, ConnectorError> {
        if let Some(c) = self.columns.get(collection) {
            return Ok(c.clone());
        }
        let (schema, table) = super::sql::split_collection(collection);
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, t.typname::text,
                        format_type(a.atttypid, NULL), COALESCE(i.indisprimary, false),
                        EXISTS (SELECT 1 FROM pg_index u WHERE u.indrelid = c.oid AND u.indisunique
                                  AND u.indnatts = 1 AND u.indkey[0] = a.attnum),
                        t.typtype = 'e',
                        a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
                   FROM pg_attribute a
                   JOIN pg_class c ON c.oid = a.attrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   JOIN pg_type t ON t.oid = a.atttypid
                   LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary AND a.attnum = ANY (i.indkey)
                  WHERE n.nspname = COALESCE($1, current_schema()) AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY a.attnum",
                &[&schema, &table],
            )
            .map_err(|e| self.query_err(&format!("describe {collection}"), e))?;
        let cols: Vec<PgColumn> = rows
            .iter()
            .map(|r| {
                let mut c = PgColumn::new(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4),
                    r.get(5),
                );
                c.unique = r.get(6);
                c.has_default = r.get(8);
                if r.get::<_, bool>(7) {
                    c.binary = binary::BinaryForm::Text;
                }
                c
            })
            .collect();
        if cols.is_empty() {
            return Err(ConnectorError::NoCollection(format!(
                "{}.{collection}",
                self.name
            )));
        }
        self.columns.insert(collection.to_string(), cols.clone());
        Ok(cols)
    }

    /// The columns of `spec` (keys first) with their types.
    fn spec_columns(&mut self, spec: &ReadSpec) -> Result<Vec<PgColumn>, ConnectorError> {
        let all = self.columns_of(&spec.collection)?;
        super::sql::pick_columns(&self.name, spec, &all, |c| &c.name)
    }

    fn select_sql(spec: &ReadSpec) -> String {
        spec.key
            .iter()
            .chain(&spec.columns)
            .map(|c| format!("{}::text", quote(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn to_record(row: &postgres::Row, cols: &[PgColumn], key_len: usize) -> Record {
        let values: Vec<Value> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| c.kind.parse(row.get::<_, Option<String>>(i)))
            .collect();
        let mut values = values;
        let rest = values.split_off(key_len);
        Record::new(Key(values), rest)
    }

    /// Whether PostgreSQL stores this create exactly as sent, on a table without
    /// triggers or rules: every value already of its column's type (an integer for an
    /// integer column, a timestamp for a timestamp column without a precision that would
    /// round it, text for `text`/`varchar`, …; decimals are checked to fit before
    /// writing), and no column of the link left out that a default would fill. Anything
    /// else is read back.
    fn stored_as_sent(all: &[PgColumn], spec: &ReadSpec, write: &Write) -> bool {
        use binary::BinaryForm as F;
        let Write::Create { values } = write else {
            return false;
        };
        let column = |name: &str| all.iter().find(|c| c.name == name);
        let kept = values.iter().all(|(c, v)| {
            let Some(col) = column(c) else { return false };
            let no_precision = !col.type_name.contains('(');
            match (col.binary, v) {
                (F::Int2 | F::Int4 | F::Int8, Value::Integer(_))
                | (F::Float8, Value::Real(_))
                | (F::Numeric, Value::Numeric(_) | Value::Integer(_))
                | (F::Bool, Value::Bool(_))
                | (F::Date, Value::Date(_))
                | (F::Uuid, Value::Uuid(_))
                | (F::Bytea, Value::Blob(_))
                | (F::Jsonb, Value::Json(_)) => true,
                (F::Timestamp, Value::Timestamp(_)) | (F::TimestampTz, Value::TimestampTz(_)) => {
                    no_precision
                }
                // `character(n)` pads; enums are text in, text out.
                (F::Text, Value::Text(_)) => col.cast_type != "character",
                (F::Text, Value::Json(_)) => col.cast_type == "json",
                _ => false,
            }
        });
        kept && spec.columns.iter().all(|c| {
            values.iter().any(|(sent, _)| **sent == **c)
                || column(c).is_some_and(|col| !col.has_default)
        })
    }

    /// `lhs` (a column, maybe qualified) still holds the value in text parameter
    /// `param`, for a conditional write. Types without an equality operator compare in a
    /// form that has one: `json` as `jsonb` (the same document, whatever its spacing),
    /// the geometric types and `xml` by their text; `character(n)` as unbounded
    /// `bpchar` (see [`type_of`](Self::type_of)), which compares without the padding.
    fn still_holds(all: &[PgColumn], column: &str, lhs: &str, param: &str) -> String {
        let ty = Self::type_of(all, column);
        match ty {
            "json" => format!("{lhs}::jsonb IS NOT DISTINCT FROM CAST({param} AS jsonb)"),
            "xml" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle" => {
                format!("{lhs}::text IS NOT DISTINCT FROM CAST({param} AS {ty})::text")
            }
            _ => format!("{lhs} IS NOT DISTINCT FROM CAST({param} AS {ty})"),
        }
    }

    /// The new record's key from a `RETURNING key::text, …` row.
    fn returned_key(all: &[PgColumn], spec: &ReadSpec, row: &postgres::Row) -> Key {
        Key(spec
            .key
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let kind = all
                    .iter()
                    .find(|c| &c.name == name)
                    .map_or(PgKind::Text, |c| c.kind);
                kind.parse(row.get::<_, Option<String>>(i))
            })
            .collect())
    }

    /// The type to `CAST` a value's text to before it is assigned to or compared with
    /// column `name`: without length or precision, because an explicit cast to
    /// `varchar(3)` truncates silently where the assignment refuses.
    /// `character` alone is `character(1)`: cast to unbounded `bpchar` instead, so that
    /// the assignment to `character(n)` pads or refuses, never cuts.
    fn type_of<'a>(cols: &'a [PgColumn], name: &str) -> &'a str {
        match cols
            .iter()
            .find(|c| c.name == name)
            .map_or("text", |c| c.cast_type.as_str())
        {
            "character" => "bpchar",
            other => other,
        }
    }

    /// Bulk creates through `COPY … FROM STDIN`: the fastest way in, used when the new
    /// rows' keys are among the values sent (see [`copy_key`]). In the binary format when
    /// every value has an exact binary form in its column (see [`binary`]), else as text.
    /// `columns` are `cols` as the table describes them (`None`: not found there).
    fn copy_creates(
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        cols: &[&str],
        columns: &[Option<&PgColumn>],
        chunk: &[&Vec<(Name, Value)>],
    ) -> Result<(), postgres::Error> {
        use std::io::Write as _;
        let columns: Option<Vec<&PgColumn>> = columns.iter().copied().collect();
        let (data, format) = match columns.and_then(|columns| binary::encode_rows(&columns, chunk))
        {
            Some(data) => (data, " (FORMAT binary)"),
            None => (copy_text_rows(chunk), ""),
        };
        let sql = format!(
            "COPY {table} ({}) FROM STDIN{format}",
            quote_list(cols, quote)
        );
        let mut writer = tx.copy_in(sql.as_str())?;
        // A failed write means the connection broke; `finish` reports it as the error.
        let _ = writer.write_all(&data);
        writer.finish().map(|_| ())
    }

    /// Bulk creates through one `INSERT … SELECT FROM unnest(…) RETURNING key`: the
    /// system assigns (or normalizes) the keys and says which.
    #[allow(clippy::too_many_arguments)]
    fn insert_creates(
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        all: &[PgColumn],
        spec: &ReadSpec,
        key_text: &str,
        cols: &[&str],
        chunk: &[&Vec<(Name, Value)>],
    ) -> Result<Vec<Key>, postgres::Error> {
        let arrays: Vec<Vec<Option<String>>> = (0..cols.len())
            .map(|c| chunk.iter().map(|v| v[c].1.to_sql_text()).collect())
            .collect();
        let (unnest, names) = unnest_text_arrays(cols.len(), "c");
        let sql = if cols.is_empty() {
            format!("INSERT INTO {table} SELECT FROM generate_series(1, $1) RETURNING {key_text}")
        } else {
            format!(
                "INSERT INTO {table} ({}) SELECT {} FROM {unnest} WITH ORDINALITY AS u({names}, ord) ORDER BY ord RETURNING {key_text}",
                quote_list(cols, quote),
                cols.iter()
                    .enumerate()
                    .map(|(n, c)| format!("CAST(u.c{n} AS {})", Self::type_of(all, c)))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let count = chunk.len() as i64;
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = if cols.is_empty() {
            vec![&count]
        } else {
            array_params(&arrays)
        };
        Ok(tx
            .query(&sql, &params)?
            .iter()
            .map(|row| Self::returned_key(all, spec, row))
            .collect())
    }

    /// Conditional updates that all set and expect the same columns, in one statement:
    /// each row is changed only if it still holds the values read. Returns, per write,
    /// whether it applied (`false`: the row changed or went since it was read).
    fn bulk_update(
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        all: &[PgColumn],
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<Vec<bool>, postgres::Error> {
        let Some(Write::Update { set, expect, .. }) = writes.first() else {
            return Ok(Vec::new());
        };
        // One text array per key column, set column and expected column, in that order;
        // `u.aN` is the Nth.
        let set_cols: Vec<&str> = set.iter().map(|(c, _)| &**c).collect();
        let expect_cols: Vec<&str> = expect.iter().map(|(c, _)| &**c).collect();
        let (n_key, n_set) = (spec.key.len(), set_cols.len());
        let mut arrays: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(writes.len()); n_key + n_set + expect_cols.len()];
        for w in writes {
            let Write::Update {
                key, set, expect, ..
            } = w
            else {
                unreachable!("an update run holds updates only")
            };
            let texts = key
                .0
                .iter()
                .map(Value::to_sql_text)
                .chain(set.iter().map(|(_, v)| v.to_sql_text()))
                .chain(expect.iter().map(|(_, v)| v.to_sql_text()));
            for (array, text) in arrays.iter_mut().zip(texts) {
                array.push(text);
            }
        }
        let cast = |n: usize, col: &str| format!("CAST(u.a{n} AS {})", Self::type_of(all, col));
        let sets = set_cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = {}", quote(c), cast(n_key + i, c)))
            .collect::<Vec<_>>()
            .join(", ");
        let conditions = spec
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t.{} = {}", quote(k), cast(i, k)))
            .chain(expect_cols.iter().enumerate().map(|(i, c)| {
                Self::still_holds(
                    all,
                    c,
                    &format!("t.{}", quote(c)),
                    &format!("u.a{}", n_key + n_set + i),
                )
            }))
            .collect::<Vec<_>>()
            .join(" AND ");
        let (unnest, names) = unnest_text_arrays(arrays.len(), "a");
        let sql = format!(
            "UPDATE {table} AS t SET {sets} FROM {unnest} WITH ORDINALITY AS u({names}, ord) WHERE {conditions} RETURNING u.ord",
        );
        let params = array_params(&arrays);
        let mut applied = vec![false; writes.len()];
        for row in tx.query(&sql, &params)? {
            let ord: i64 = row.get(0);
            if let Some(slot) = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| applied.get_mut(i))
            {
                *slot = true;
            }
        }
        Ok(applied)
    }

    /// One batch inside one transaction. `Err(true)` = retryable before COMMIT.
    fn apply_once(
        &mut self,
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<BatchResult, (postgres::Error, bool)> {
        let all = self
            .columns
            .get(&spec.collection)
            .cloned()
            .unwrap_or_default();
        let table = quote_table(&spec.collection);
        let key_text = spec
            .key
            .iter()
            .map(|k| format!("{}::text", quote(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let retry = |e: postgres::Error| {
            let r = is_retryable(&e);
            (e, r)
        };
        let mut tx = self.client.transaction().map_err(retry)?;
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];

        // Creates with the same columns go in one statement per chunk; if one of them is
        // refused, that chunk is replayed row by row to find which.
        for run in super::sql::create_runs(writes, CREATE_CHUNK) {
            let (i, j) = (run.start, run.end);
            let Write::Create { values } = &writes[i] else {
                unreachable!("runs start with a create")
            };
            let cols: Vec<&str> = values.iter().map(|(c, _)| &**c).collect();
            // The run's creates all send these columns: looked up once, for the fit check
            // below and the COPY's binary forms.
            // Values the columns cannot hold exactly are refused here, by name, since
            // PostgreSQL would round them silently.
            let run_columns: Vec<Option<&PgColumn>> = cols
                .iter()
                .map(|c| all.iter().find(|col| col.name == *c))
                .collect();
            let mut positions = Vec::new();
            let mut chunk: Vec<&Vec<(Name, Value)>> = Vec::new();
            for (n, w) in writes.iter().enumerate().take(j).skip(i) {
                let Write::Create { values } = w else {
                    unreachable!("chunk holds creates only")
                };
                match values
                    .iter()
                    .zip(&run_columns)
                    .try_for_each(|((c, v), col)| types::check_fits_in(*col, c, v))
                {
                    Ok(()) => {
                        positions.push(n);
                        chunk.push(values);
                    }
                    Err(why) => outcomes[n] = Some(WriteOutcome::Rejected(why)),
                }
            }
            if chunk.is_empty() {
                continue;
            }
            tx.batch_execute("SAVEPOINT chunk").map_err(retry)?;
            let bulk = match copy_key(&all, spec, &cols) {
                Some(key_at) => {
                    Self::copy_creates(&mut tx, &table, &cols, &run_columns, &chunk).map(|()| {
                        chunk
                            .iter()
                            .map(|values| {
                                Key(key_at
                                    .iter()
                                    .map(|&(at, kind)| match &values[at].1 {
                                        // The key as the column holds it, as a scan reads it.
                                        v @ Value::Integer(_) if kind == PgKind::Int => v.clone(),
                                        v => kind.parse(v.to_sql_text()),
                                    })
                                    .collect())
                            })
                            .collect()
                    })
                }
                None => Self::insert_creates(&mut tx, &table, &all, spec, &key_text, &cols, &chunk),
            };
            match bulk {
                Ok(keys) => {
                    tx.batch_execute("RELEASE chunk").map_err(retry)?;
                    for (&n, key) in positions.iter().zip(keys) {
                        outcomes[n] = Some(WriteOutcome::Created(key));
                    }
                }
                Err(e) if is_record_error(&e) => {
                    tx.batch_execute("ROLLBACK TO chunk").map_err(retry)?;
                    for &n in &positions {
                        let Write::Create { values } = &writes[n] else {
                            continue;
                        };
                        let sql = if values.is_empty() {
                            format!("INSERT INTO {table} DEFAULT VALUES RETURNING {key_text}")
                        } else {
                            format!(
                                "INSERT INTO {table} ({}) VALUES ({}) RETURNING {key_text}",
                                quote_list(values.iter().map(|(c, _)| c), quote),
                                values
                                    .iter()
                                    .enumerate()
                                    .map(|(p, (c, _))| format!(
                                        "CAST(${}::text AS {})",
                                        p + 1,
                                        Self::type_of(&all, c)
                                    ))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        let texts: Vec<Option<String>> =
                            values.iter().map(|(_, v)| v.to_sql_text()).collect();
                        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
                            .iter()
                            .map(|t| t as &(dyn postgres::types::ToSql + Sync))
                            .collect();
                        tx.batch_execute("SAVEPOINT one").map_err(retry)?;
                        match tx.query_one(&sql, &params) {
                            Ok(row) => {
                                tx.batch_execute("RELEASE one").map_err(retry)?;
                                let key = Self::returned_key(&all, spec, &row);
                                outcomes[n] = Some(WriteOutcome::Created(key));
                            }
                            Err(e) if is_record_error(&e) => {
                                tx.batch_execute("ROLLBACK TO one").map_err(retry)?;
                                outcomes[n] = Some(WriteOutcome::Rejected(db_message(&e)));
                            }
                            Err(e) => return Err(retry(e)),
                        }
                    }
                }
                Err(e) => return Err(retry(e)),
            }
        }

        // Updates that set and expect the same columns go in one statement per run: the
        // rows it changes are those still holding what was read, the rest are stale. If
        // one is refused, the run is left to the row-by-row pass below to find which.
        for run in super::sql::update_runs(writes, CREATE_CHUNK) {
            let batch = &writes[run.clone()];
            let fits = batch.iter().all(|w| match w {
                Write::Update { set, .. } => set
                    .iter()
                    .all(|(c, v)| types::check_fits(&all, c, v).is_ok()),
                _ => false,
            });
            if batch.len() < 2 || !fits {
                continue;
            }
            tx.batch_execute("SAVEPOINT updates").map_err(retry)?;
            match Self::bulk_update(&mut tx, &table, &all, spec, batch) {
                Ok(applied) => {
                    tx.batch_execute("RELEASE updates").map_err(retry)?;
                    for (offset, applied) in applied.into_iter().enumerate() {
                        outcomes[run.start + offset] = Some(if applied {
                            WriteOutcome::Applied
                        } else {
                            WriteOutcome::Stale
                        });
                    }
                }
                Err(e) if is_record_error(&e) => {
                    tx.batch_execute("ROLLBACK TO updates").map_err(retry)?;
                }
                Err(e) => return Err(retry(e)),
            }
        }

        // The remaining updates, and deletes, each conditional on the values read.
        for (n, write) in writes.iter().enumerate() {
            if outcomes[n].is_some() {
                continue;
            }
            let (sql, texts) = match write {
                Write::Create { .. } => continue,
                Write::Update { set, .. }
                    if let Err(why) = set
                        .iter()
                        .try_for_each(|(c, v)| types::check_fits(&all, c, v)) =>
                {
                    outcomes[n] = Some(WriteOutcome::Rejected(why));
                    continue;
                }
                conditional => {
                    let sql = super::sql::conditional_write_sql(
                        &PgDialect(&all),
                        &table,
                        &spec.key,
                        conditional,
                    )
                    .expect("an update or a delete");
                    let (set, key, expect) =
                        super::sql::conditional_parts(conditional).expect("an update or a delete");
                    let texts: Vec<Option<String>> = set
                        .iter()
                        .map(|(_, v)| v.to_sql_text())
                        .chain(key.0.iter().map(Value::to_sql_text))
                        .chain(expect.iter().map(|(_, v)| v.to_sql_text()))
                        .collect();
                    (sql, texts)
                }
            };
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
                .iter()
                .map(|t| t as &(dyn postgres::types::ToSql + Sync))
                .collect();
            tx.batch_execute("SAVEPOINT one").map_err(retry)?;
            match tx.execute(&sql, &params) {
                Ok(count) => {
                    tx.batch_execute("RELEASE one").map_err(retry)?;
                    outcomes[n] = Some(if count == 0 {
                        WriteOutcome::Stale
                    } else {
                        WriteOutcome::Applied
                    });
                }
                Err(e) if is_record_error(&e) => {
                    tx.batch_execute("ROLLBACK TO one").map_err(retry)?;
                    outcomes[n] = Some(WriteOutcome::Rejected(db_message(&e)));
                }
                Err(e) => return Err(retry(e)),
            }
        }
        let outcomes: Vec<WriteOutcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every write has an outcome"))
            .collect();
        // Read back before COMMIT: the rows written are locked by this transaction (and
        // created ones invisible to others), so this is what the writes stored. A create
        // PostgreSQL stores exactly as sent is not read back (see `stored_as_sent`).
        let rewrites = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::text::regclass AND NOT tgisinternal)
                     OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = $1::text::regclass AND rulename <> '_RETURN')",
                &[&table],
            )
            .map_err(retry)?
            .get::<_, bool>(0);
        let keys = BatchResult::written_keys_where(writes, &outcomes, |w| {
            rewrites || !Self::stored_as_sent(&all, spec, w)
        });
        let mut stored = Vec::with_capacity(keys.len());
        if !keys.is_empty() {
            let cols =
                super::sql::pick_columns(&self.name, spec, &all, |c| &c.name).unwrap_or_default();
            let arrays: Vec<Vec<Option<String>>> = (0..spec.key.len())
                .map(|i| keys.iter().map(|k| k.0[i].to_sql_text()).collect())
                .collect();
            let params = array_params(&arrays);
            let rows = tx
                .query(Self::fetch_sql(spec, &cols).as_str(), &params)
                .map_err(retry)?;
            stored.extend(
                rows.iter()
                    .map(|r| Self::to_record(r, &cols, spec.key.len())),
            );
        }
        // From here on the outcome of a failure is unknown: never retried.
        tx.commit().map_err(|e| (e, false))?;
        Ok(BatchResult::with_stored(writes, outcomes, stored))
    }
}

impl Connector for PostgresConnector {
    fn identity(&mut self) -> Result<String, ConnectorError> {
        let row = self
            .client
            .query_one(
                "SELECT current_database()::text, (SELECT oid::text FROM pg_database WHERE datname = current_database()),
                        COALESCE(host(inet_server_addr()), 'local socket'), current_setting('port')",
                &[],
            )
            .map_err(|e| self.query_err("read its identity", e))?;
        let (db, oid, host, port): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        // The cluster's own id, where this role may read it (superusers, pg_monitor): a
        // restored copy or a replica promoted elsewhere has another.
        let cluster = self
            .client
            .query_opt(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .ok()
            .flatten()
            .map(|r| r.get::<_, String>(0));
        Ok(match cluster {
            Some(id) => format!("postgres cluster {id} database {db} (oid {oid})"),
            None => format!("postgres server {host}:{port} database {db} (oid {oid})"),
        })
    }

    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError> {
        Ok(self
            .columns_of(collection)?
            .into_iter()
            .map(|c| ColumnInfo {
                name: c.name,
                declared_type: c.type_name,
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
        use std::io::BufRead as _;
        let cols = self.spec_columns(spec)?;
        // `COPY (SELECT …) TO STDOUT` streams the rows in key order with the least work
        // for the server: measured here, half the server CPU of fetching the same
        // `::text` columns through a portal.
        let sql = format!(
            "COPY (SELECT {} FROM {} ORDER BY {}) TO STDOUT",
            copy_out_columns(spec, &cols),
            quote_table(&spec.collection),
            quote_list(&spec.key, quote)
        );
        let context = format!("system `{}`: scan {}", self.name, spec.collection);
        let err = |e: postgres::Error| {
            ConnectorError::query(context.clone(), db_message(&e), is_lost(&e))
        };
        let read_err = |e: std::io::Error| match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<postgres::Error>())
        {
            Some(pg) => ConnectorError::query(context.clone(), db_message(pg), is_lost(pg)),
            // A read of the stream that failed below the protocol: the connection.
            None => ConnectorError::query(context.clone(), e.to_string(), true),
        };
        // One snapshot for the whole scan. The connection reads no further ahead than
        // the stream is consumed, so memory holds a batch.
        let mut tx = self
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(err)?;
        let mut reader = tx.copy_out(sql.as_str()).map_err(err)?;
        let mut line = Vec::new();
        let mut batches = super::ScanBatches::new(batch_size, consumer);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(read_err)? == 0 {
                break;
            }
            let record = copy_line_record(&line, &cols, spec.key.len()).map_err(|why| {
                ConnectorError::Query {
                    context: context.clone(),
                    source: why.into(),
                }
            })?;
            batches.push(record)?;
        }
        let count = batches.finish()?;
        drop(reader);
        tx.commit().map_err(err)?;
        Ok(count)
    }

    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {})",
            quote_table(&spec.collection)
        );
        let any: bool = self
            .client
            .query_one(sql.as_str(), &[])
            .map_err(|e| self.query_err(&format!("read {}", spec.collection), e))?
            .get(0);
        Ok(!any)
    }

    fn count(&mut self, spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        let sql = format!("SELECT count(*) FROM {}", quote_table(&spec.collection));
        let n: i64 = self
            .client
            .query_one(sql.as_str(), &[])
            .map_err(|e| self.query_err(&format!("count {}", spec.collection), e))?
            .get(0);
        Ok(u64::try_from(n).ok())
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cols = self.spec_columns(spec)?;
        let n = spec.key.len();
        let sql = Self::fetch_sql(spec, &cols);
        let statement = match self.fetches.get(&sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = self
                    .client
                    .prepare(&sql)
                    .map_err(|e| self.query_err(&format!("fetch from {}", spec.collection), e))?;
                self.fetches.insert(sql, statement.clone());
                statement
            }
        };
        let arrays: Vec<Vec<Option<String>>> = (0..n)
            .map(|i| keys.iter().map(|k| k.0[i].to_sql_text()).collect())
            .collect();
        let params = array_params(&arrays);
        let rows = self
            .client
            .query(&statement, &params)
            .map_err(|e| self.query_err(&format!("fetch from {}", spec.collection), e))?;
        Ok(rows.iter().map(|r| Self::to_record(r, &cols, n)).collect())
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        self.spec_columns(spec)?;
        super::sql::apply_with_retries(self, spec, writes)
    }
}

impl super::sql::RetryableBatches for PostgresConnector {
    fn system(&self) -> &str {
        &self.name
    }

    fn attempt(
        &mut self,
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<BatchResult, (String, bool)> {
        self.apply_once(spec, writes)
            .map_err(|(e, retry)| (db_message(&e), retry))
    }

    fn recover(&mut self) -> Result<(), ConnectorError> {
        if self.client.is_closed() {
            self.client = Self::connect(&self.name, &self.url)?;
            self.fetches.clear();
        }
        Ok(())
    }
}

/// PostgreSQL's conditional writes: text parameters cast to each column's type, keys
/// compared with `=` (which an index serves; `IS NOT DISTINCT FROM` is not).
struct PgDialect<'c>(&'c [PgColumn]);

impl super::sql::Dialect for PgDialect<'_> {
    fn assign(&self, column: &str, n: usize) -> String {
        format!(
            "{} = CAST(${n}::text AS {})",
            quote(column),
            PostgresConnector::type_of(self.0, column)
        )
    }
    fn still_holds(&self, column: &str, n: usize) -> String {
        PostgresConnector::still_holds(self.0, column, &quote(column), &format!("${n}::text"))
    }
    fn key_equals(&self, column: &str, n: usize) -> String {
        self.assign(column, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_column(name: &str) -> PgColumn {
        PgColumn::new(
            name.into(),
            "text".into(),
            false,
            "text".into(),
            "text".into(),
            false,
        )
    }

    #[test]
    fn copy_text_fields_decode_every_escape_postgresql_accepts() {
        assert_eq!(copy_unescape(b"plain").unwrap(), "plain");
        assert_eq!(
            copy_unescape(b"a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh").unwrap(),
            "a\tb\nc\rd\\e\x08f\x0cg\x0bh"
        );
        assert_eq!(
            copy_unescape(b"\\101\\7x\\x41\\x4g").unwrap(),
            "A\x07xA\x04g"
        );
        assert_eq!(copy_unescape(b"\\.\\q").unwrap(), ".q");
        assert!(
            copy_unescape(b"\\377").is_err(),
            "a lone 0xff byte is not UTF-8"
        );
    }

    #[test]
    fn a_copy_line_becomes_a_record_with_nulls_and_its_field_count_checked() {
        let cols = [text_column("id"), text_column("a"), text_column("b")];
        let r = copy_line_record(b"k\\\\1\t\\N\tx\\ty\n", &cols, 1).unwrap();
        assert_eq!(r.key, Key(vec![Value::Text("k\\1".into())]));
        assert_eq!(r.values, vec![Value::Null, Value::Text("x\ty".into())]);
        let short = copy_line_record(b"k\tv", &cols, 1).unwrap_err();
        assert!(short.contains("fewer fields"), "{short}");
        let long = copy_line_record(b"k\ta\tb\tc", &cols, 1).unwrap_err();
        assert!(long.contains("more fields"), "{long}");
    }
}
