//! Shared test fixtures: two SQLite databases and a config in a temporary folder.
#![allow(dead_code)]

pub mod servers;
pub mod sql;

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
    /// With `SYNCLINE_TEST_STATE=postgres`, the state store lives in this database.
    pub state_db: Option<TempDatabase>,
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
        let state_db = match std::env::var("SYNCLINE_TEST_STATE").as_deref() {
            Ok("postgres") => {
                let url = std::env::var("SYNCLINE_TEST_PG_URL")
                    .expect("SYNCLINE_TEST_STATE=postgres needs SYNCLINE_TEST_PG_URL");
                Some(TempDatabase::postgres(&url))
            }
            _ => None,
        };
        let f = Fixture {
            dir,
            left,
            right,
            state_db,
        };
        f.write_config(links);
        f
    }

    /// Empty `left.db` and `right.db`, and a config naming `systems` (TOML tables) and
    /// `links`: for links to server systems.
    pub fn with_systems(systems: &str, links: &str) -> Fixture {
        let f = Fixture::new("", "", "");
        let state = match &f.state_db {
            Some(db) => format!("[state]\nurl = \"{}\"\n\n", db.url),
            None => String::new(),
        };
        std::fs::write(f.config_path(), format!("{state}{systems}\n{links}")).unwrap();
        f
    }

    /// A SQLite `crm` (left.db) and `billing` as a server of `kind` at `url`.
    pub fn sqlite_to_server(kind: &str, url: &str, links: &str) -> Fixture {
        Fixture::with_systems(
            &format!(
                "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.billing]\nkind = \"{kind}\"\nurl = \"{url}\"\n"
            ),
            links,
        )
    }

    pub fn write_config(&self, links: &str) {
        let state = match &self.state_db {
            Some(db) => format!("[state]\nurl = \"{}\"\n\n", db.url),
            None => String::new(),
        };
        std::fs::write(
            self.config_path(),
            format!(
                "{state}[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n\n{links}"
            ),
        )
        .unwrap();
    }

    /// The state store the config names (SQLite file, or the PostgreSQL test database).
    pub fn store(&self) -> StateStore {
        StateStore::for_config(&self.config().state, false).unwrap()
    }

    /// Forgets everything the state store knew, as if it had been lost.
    pub fn lose_state(&self) {
        match &self.state_db {
            Some(db) => db
                .pg_client()
                .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                .unwrap(),
            None => std::fs::remove_dir_all(self.dir.path().join(".syncline")).unwrap(),
        }
    }

    /// Everything the state store holds, to compare before and after; `None` when it
    /// has not been created.
    pub fn state_snapshot(&self) -> Option<Vec<String>> {
        match &self.state_db {
            None => std::fs::read(self.state_path())
                .ok()
                .map(|b| vec![format!("{b:?}")]),
            Some(db) => {
                let mut c = db.pg_client();
                let exists: bool = c
                    .query_one("SELECT to_regclass('pairs') IS NOT NULL", &[])
                    .unwrap()
                    .get(0);
                exists.then(|| {
                    [
                        "links",
                        "pairs",
                        "runs",
                        "journal",
                        "journal_applied",
                        "conflicts",
                        "quarantine",
                    ]
                    .iter()
                    .flat_map(|t| {
                        c.query(
                            &format!("SELECT CAST(t AS text) FROM {t} t ORDER BY 1"),
                            &[],
                        )
                        .unwrap()
                        .iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                    })
                    .collect()
                })
            }
        }
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
        match self.config().state {
            StateLocation::Sqlite(p) => p,
            StateLocation::Postgres(_) => panic!("the state store is in PostgreSQL"),
        }
    }

    pub fn run(&self) -> RunReport {
        self.run_with(RunOptions::default())
    }

    pub fn run_with(&self, opts: RunOptions<'_>) -> RunReport {
        let config = self.config();
        let mut state = self.store();
        engine::run_cycle(&config, &mut state, opts).unwrap()
    }

    pub fn plan(&self) -> RunReport {
        let config = self.config();
        let mut state = StateStore::for_config(&config.state, true).unwrap();
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

/// Runs `syncline run` in `dir`: its exit code and what it printed on stderr.
pub fn run_binary(dir: &Path) -> (Option<i32>, String) {
    let out = syncline(dir).arg("run").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A server URL from the environment. In CI (`CI` set) a missing variable is a failure;
/// on a laptop the test is skipped with a message saying how to run it.
pub fn server_url(var: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set, and CI needs this test to run")
        }
        _ => {
            // Straight to stderr, not through `eprintln!`, which the test harness captures
            // and hides for a passing test: a skip must be seen.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: set {var}={example} to run this test against a real server"
            );
            None
        }
    }
}

/// A fresh, uniquely named database on the server, dropped at the end of the test.
pub struct TempDatabase {
    pub url: String,
    admin_url: String,
    name: String,
    kind: &'static str,
}

fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("URL with a /database");
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

impl TempDatabase {
    pub fn postgres(admin_url: &str) -> TempDatabase {
        let name = unique_name("syncline_t");
        let mut c =
            postgres::Client::connect(admin_url, postgres::NoTls).expect("PostgreSQL is reachable");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        TempDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
            kind: "postgres",
        }
    }

    pub fn mysql(admin_url: &str) -> TempDatabase {
        use mysql::prelude::Queryable;
        let name = unique_name("syncline_t");
        let mut c = mysql::Conn::new(mysql::Opts::from_url(admin_url).unwrap())
            .expect("MariaDB is reachable");
        c.query_drop(format!("CREATE DATABASE {name}")).unwrap();
        TempDatabase {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_string(),
            name,
            kind: "mysql",
        }
    }

    pub fn mysql_conn(&self) -> mysql::Conn {
        use mysql::prelude::Queryable;
        let mut c = mysql::Conn::new(mysql::Opts::from_url(&self.url).unwrap()).unwrap();
        c.query_drop("SET time_zone = '+00:00'").unwrap();
        c
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pg_client(&self) -> postgres::Client {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.batch_execute("SET TimeZone = 'UTC'").unwrap();
        c
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if self.kind == "postgres"
            && let Ok(mut c) = postgres::Client::connect(&self.admin_url, postgres::NoTls)
        {
            // A database with replication slots cannot be dropped; its slots' origins
            // (named after them) are the server's, not the database's.
            let _ = c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
                &[&self.name],
            );
            let _ = c.execute(
                "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE $1",
                &[&format!("{}%", self.name)],
            );
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
        if self.kind == "mysql"
            && let Ok(opts) = mysql::Opts::from_url(&self.admin_url)
            && let Ok(mut c) = mysql::Conn::new(opts)
        {
            use mysql::prelude::Queryable;
            let _ = c.query_drop(format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}
