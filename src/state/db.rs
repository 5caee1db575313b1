//! The two databases a state store can live in, behind one small interface: run a
//! statement, query rows of text and integers. The store's SQL is written once, in the
//! dialect both SQLite and PostgreSQL accept (`$n` parameters, `ON CONFLICT`,
//! `RETURNING`, `CAST(… AS TEXT)`); only the schema differs.

use super::{Result, StateError};
use std::collections::HashMap;

/// A parameter: the store only ever binds text and integers.
#[derive(Debug, Clone, Copy)]
pub enum P<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
}

/// A result cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Row(pub Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0
            .get(i)
            .ok_or_else(|| StateError::Corrupt(format!("missing column {i}")))
    }

    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| StateError::Corrupt(format!("column {i} is NULL")))
    }

    /// [`text`](Self::text) without copying it out of the row.
    pub(crate) fn text_ref(&self, i: usize) -> Result<std::borrow::Cow<'_, str>> {
        match self.cell(i)? {
            Cell::Null => Err(StateError::Corrupt(format!("column {i} is NULL"))),
            Cell::Text(t) => Ok(std::borrow::Cow::Borrowed(t)),
            Cell::Int(n) => Ok(std::borrow::Cow::Owned(n.to_string())),
        }
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(match self.cell(i)? {
            Cell::Null => None,
            Cell::Text(t) => Some(t.clone()),
            Cell::Int(n) => Some(n.to_string()),
        })
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| StateError::Corrupt(format!("column {i} is NULL")))
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            Cell::Text(t) => t
                .parse()
                .map(Some)
                .map_err(|_| StateError::Corrupt(format!("column {i}: {t:?} is not a number"))),
        }
    }
}

pub enum Db {
    Sqlite {
        conn: rusqlite::Connection,
        /// Each statement's `$n` → `?n` form, converted once.
        dialect: HashMap<String, String>,
    },
    Postgres {
        client: Box<postgres::Client>,
        statements: HashMap<String, postgres::Statement>,
    },
}

/// `$1` → `?1`: SQLite numbers `$NAME` parameters by first appearance, `?N` by N.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// `sql` in SQLite's form, from `cache` after the first time.
fn sqlite_form<'c>(cache: &'c mut HashMap<String, String>, sql: &str) -> &'c str {
    if !cache.contains_key(sql) {
        cache.insert(sql.to_string(), sqlite_sql(sql));
    }
    &cache[sql]
}

impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match *self {
            P::Text(t) | P::OptText(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            P::Int(n) | P::OptInt(Some(n)) => ToSqlOutput::Borrowed(ValueRef::Integer(n)),
            P::OptText(None) | P::OptInt(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

fn pg_params<'a>(params: &'a [P<'a>]) -> Vec<Box<dyn postgres::types::ToSql + Sync + 'a>> {
    params
        .iter()
        .map(|p| -> Box<dyn postgres::types::ToSql + Sync + 'a> {
            match *p {
                P::Text(t) => Box::new(t),
                P::OptText(t) => Box::new(t),
                P::Int(n) => Box::new(n),
                P::OptInt(n) => Box::new(n),
            }
        })
        .collect()
}

fn pg_row(row: &postgres::Row) -> Row {
    use postgres::types::Type;
    Row((0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            if *ty == Type::INT8 {
                row.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int)
            } else if *ty == Type::INT4 {
                row.get::<_, Option<i32>>(i)
                    .map_or(Cell::Null, |n| Cell::Int(n.into()))
            } else if *ty == Type::BOOL {
                row.get::<_, Option<bool>>(i)
                    .map_or(Cell::Null, |b| Cell::Int(b.into()))
            } else {
                row.get::<_, Option<String>>(i)
                    .map_or(Cell::Null, Cell::Text)
            }
        })
        .collect())
}

impl Db {
    pub fn execute(&mut self, sql: &str, params: &[P<'_>]) -> Result<u64> {
        match self {
            Db::Sqlite { conn, dialect } => Ok(conn
                .prepare_cached(sqlite_form(dialect, sql))?
                .execute(rusqlite::params_from_iter(params.iter()))?
                as u64),
            Db::Postgres { client, statements } => {
                let stmt = pg_statement(client, statements, sql)?;
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as _).collect();
                Ok(client.execute(&stmt, &refs)?)
            }
        }
    }

    pub fn query(&mut self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite { conn, dialect } => {
                let mut stmt = conn.prepare_cached(sqlite_form(dialect, sql))?;
                let n = stmt.column_count();
                let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => Cell::Null,
                                rusqlite::types::ValueRef::Integer(n) => Cell::Int(n),
                                rusqlite::types::ValueRef::Real(f) => Cell::Text(f.to_string()),
                                rusqlite::types::ValueRef::Text(t)
                                | rusqlite::types::ValueRef::Blob(t) => {
                                    Cell::Text(String::from_utf8_lossy(t).into_owned())
                                }
                            })
                        })
                        .collect::<rusqlite::Result<Vec<_>>>()
                        .map(Row)
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            }
            Db::Postgres { client, statements } => {
                let stmt = pg_statement(client, statements, sql)?;
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref() as _).collect();
                Ok(client.query(&stmt, &refs)?.iter().map(pg_row).collect())
            }
        }
    }

    pub(crate) fn query_opt(&mut self, sql: &str, params: &[P<'_>]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    pub fn batch(&mut self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite { conn, .. } => Ok(conn.execute_batch(sql)?),
            Db::Postgres { client, .. } => Ok(client.batch_execute(sql)?),
        }
    }
}

/// Prepared once per connection: the store runs the same few statements many times.
fn pg_statement(
    client: &mut postgres::Client,
    cache: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let stmt = client.prepare(sql)?;
    cache.insert(sql.to_string(), stmt.clone());
    Ok(stmt)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollar_parameters_become_numbered_for_sqlite() {
        assert_eq!(
            super::sqlite_sql("a = $1 AND b = $12 AND c = '$x'"),
            "a = ?1 AND b = ?12 AND c = '$x'"
        );
    }
}
