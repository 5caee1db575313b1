//! Shared test fixtures: two SQLite databases and a config in a temporary folder.
#![allow(dead_code)]

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use syncline::config::{Config, StateLocation};
use syncline::engine::{self, RunOptions, RunReport};
use syncline::model::Value;
use syncline::state::StateStore;
use tempfile::TempDir;

pub struct Fixture {
    pub dir: TempDir,
    pub left: Connection,
    pub right: Connection,
}

impl Fixture {
    /// `left.db` and `right.db` with the given schemas, and `syncline.toml` with
    /// `systems.crm` (left) and `systems.billing` (right) followed by `links`.
    pub fn new(left_schema: &str, right_schema: &str, links: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let left = Connection::open(dir.path().join("left.db")).unwrap();
        left.execute_batch(left_schema).unwrap();
        let right = Connection::open(dir.path().join("right.db")).unwrap();
        right.execute_batch(right_schema).unwrap();
        let f = Fixture { dir, left, right };
        f.write_config(links);
        f
    }

    pub fn write_config(&self, links: &str) {
        std::fs::write(
            self.config_path(),
            format!(
                "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n\n{links}"
            ),
        )
        .unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("syncline.toml")
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path()).unwrap()
    }

    pub fn state_path(&self) -> PathBuf {
        let StateLocation::Sqlite(p) = self.config().state;
        p
    }

    pub fn run(&self) -> RunReport {
        self.run_with(RunOptions::default())
    }

    pub fn run_with(&self, opts: RunOptions<'_>) -> RunReport {
        let config = self.config();
        let mut state = StateStore::open(&self.state_path()).unwrap();
        engine::run_cycle(&config, &mut state, opts).unwrap()
    }

    pub fn plan(&self) -> RunReport {
        let config = self.config();
        let mut state = StateStore::open_read_only(&self.state_path()).unwrap();
        engine::run_cycle(
            &config,
            &mut state,
            RunOptions {
                apply: false,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Rows of a query as values.
    pub fn rows(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap()
    }
}

/// Writes made by a run, both directions.
pub fn writes(report: &RunReport) -> u64 {
    report
        .links
        .iter()
        .map(|l| l.to_left.writes() + l.to_right.writes())
        .sum()
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The syncline binary, for end-to-end tests.
pub fn syncline(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("syncline").unwrap();
    cmd.current_dir(dir)
        .env_remove("SYNCLINE_CONFIG")
        .env("NO_COLOR", "1");
    cmd
}
