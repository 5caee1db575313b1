//! One way to reach any test database from a scenario that runs on every kind.

use mysql::prelude::Queryable;

/// The two sides' databases, as the scenario reaches them.
pub trait Sql {
    fn run_sql(&mut self, sql: &str);
    /// The first column of each row, as text (NULL as "NULL").
    fn texts(&mut self, sql: &str) -> Vec<String>;
}

impl Sql for rusqlite::Connection {
    fn run_sql(&mut self, sql: &str) {
        self.execute_batch(sql).unwrap();
    }
    fn texts(&mut self, sql: &str) -> Vec<String> {
        let mut stmt = self.prepare(sql).unwrap();
        stmt.query_map([], |r| {
            Ok(match r.get_ref(0)? {
                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                rusqlite::types::ValueRef::Blob(_) => "blob".to_string(),
            })
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }
}

impl Sql for postgres::Client {
    fn run_sql(&mut self, sql: &str) {
        self.batch_execute(sql).unwrap();
    }
    fn texts(&mut self, sql: &str) -> Vec<String> {
        self.query(
            &format!("SELECT COALESCE(x::text, 'NULL') FROM ({sql}) AS q(x)"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    }
}

impl Sql for mysql::Conn {
    fn run_sql(&mut self, sql: &str) {
        self.query_drop(sql).unwrap();
    }
    fn texts(&mut self, sql: &str) -> Vec<String> {
        self.query::<Option<String>, _>(sql)
            .unwrap()
            .into_iter()
            .map(|v| v.unwrap_or_else(|| "NULL".into()))
            .collect()
    }
}
