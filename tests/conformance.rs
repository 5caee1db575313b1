//! The connector contract (v2, `src/connectors/mod.rs`), written once and run against
//! every kind: SQLite; PostgreSQL and MariaDB when their URLs are set; and the in-memory
//! kind in three shapes — writes conditional by version, by nothing at all, and with a
//! change feed — which declares no snapshot, no atomic batch and no read-back, so it takes
//! the engine through the paths that are not SQL's.
//!
//! Each kind is checked as it declares itself (scan order and completeness, conditional
//! writes, versions, a change feed) and as the engine sees it through `engine::adapt`
//! (every write's outcome known, what was stored read back, a write to a record changed
//! since it was read never made — whatever the kind declares).

mod support;

use support::sql::Sql;
use support::{Fixture, TempDatabase, server_url, writes};
use syncline::connectors::{
    self, Capabilities, Conditional, Connector, ConnectorError, ReadSpec, Write, WriteOutcome,
    memory,
};
use syncline::engine::adapt;
use syncline::model::{Key, Name, Value};

/// One kind, with a collection `t (id integer key, a text, b text)` to test on.
trait Kind {
    fn label(&self) -> String;
    fn connector(&mut self) -> Box<dyn Connector>;
    /// A person inserts a row.
    fn insert(&mut self, id: i64, a: &str);
    /// A person edits a row, behind syncline's back.
    fn edit(&mut self, id: i64, a: &str);
}

struct SqlKind<S: Sql> {
    label: &'static str,
    db: S,
    open: Box<dyn Fn() -> Box<dyn Connector>>,
    _keep: Option<TempDatabase>,
    _dir: Option<tempfile::TempDir>,
}

impl<S: Sql> Kind for SqlKind<S> {
    fn label(&self) -> String {
        self.label.to_string()
    }
    fn connector(&mut self) -> Box<dyn Connector> {
        (self.open)()
    }
    fn insert(&mut self, id: i64, a: &str) {
        self.db
            .run_sql(&format!("INSERT INTO t (id, a) VALUES ({id}, '{a}')"));
    }
    fn edit(&mut self, id: i64, a: &str) {
        self.db
            .run_sql(&format!("UPDATE t SET a = '{a}' WHERE id = {id}"));
    }
}

struct MemoryKind {
    store: String,
}

impl Kind for MemoryKind {
    fn label(&self) -> String {
        format!("memory ({})", self.store)
    }
    fn connector(&mut self) -> Box<dyn Connector> {
        Box::new(memory::MemoryConnector::open(&self.store).unwrap())
    }
    fn insert(&mut self, id: i64, a: &str) {
        memory::put(
            &self.store,
            "t",
            &[("id", Value::Integer(id)), ("a", Value::Text(a.into()))],
        );
    }
    fn edit(&mut self, id: i64, a: &str) {
        let mut row = memory::rows(&self.store, "t")
            .into_iter()
            .find(|r| r["id"] == Value::Integer(id))
            .unwrap();
        row.insert("a".into(), Value::Text(a.into()));
        let values: Vec<(&str, Value)> = row.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        memory::put(&self.store, "t", &values);
    }
}

fn memory_kind(label: &str, conditional: Conditional, change_feed: bool) -> MemoryKind {
    // Unique per call: the tests run in parallel in one process, and a store is global.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let store = format!("conformance-{label}-{}-{n}", std::process::id());
    memory::create(
        &store,
        Capabilities {
            conditional,
            change_feed,
            ..Capabilities::SQL
        },
    );
    memory::create_collection(&store, "t", &["id", "a", "b"], &["id"]);
    MemoryKind { store }
}

/// A file kind (`csv` or `jsonl`): collection `t` is a file a person edits by hand.
struct FileKind {
    format: &'static str,
    dir: tempfile::TempDir,
}

impl FileKind {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(format!("t.{}", self.format))
    }
    fn line(&self, id: i64, a: &str) -> String {
        match self.format {
            "csv" => format!("{id},{a},\n"),
            _ => format!("{{\"id\": {id}, \"a\": \"{a}\"}}\n"),
        }
    }
}

impl Kind for FileKind {
    fn label(&self) -> String {
        self.format.to_string()
    }
    fn connector(&mut self) -> Box<dyn Connector> {
        let mut types = std::collections::HashMap::new();
        types.insert("id".to_string(), connectors::file::ColumnType::Integer);
        let settings = connectors::file::FileSettings {
            dir: self.dir.path().to_path_buf(),
            format: match self.format {
                "csv" => connectors::file::Format::Csv(connectors::file::Dialect {
                    delimiter: b',',
                    quote: b'"',
                    header: true,
                    bom: false,
                    crlf: false,
                }),
                _ => connectors::file::Format::Jsonl,
            },
            types,
            columns: [("t".to_string(), vec!["id".into(), "a".into(), "b".into()])].into(),
        };
        Box::new(connectors::file::FileConnector::open("t", &settings).unwrap())
    }
    fn insert(&mut self, id: i64, a: &str) {
        let mut text = std::fs::read_to_string(self.path()).unwrap_or_default();
        if text.is_empty() && self.format == "csv" {
            text.push_str("id,a,b\n");
        }
        text.push_str(&self.line(id, a));
        std::fs::write(self.path(), text).unwrap();
    }
    fn edit(&mut self, id: i64, a: &str) {
        let text = std::fs::read_to_string(self.path()).unwrap();
        let prefix = match self.format {
            "csv" => format!("{id},"),
            _ => format!("{{\"id\":{id},"),
        };
        let edited: String = text
            .lines()
            .map(|l| {
                if l.replace(' ', "").starts_with(&prefix) {
                    self.line(id, a)
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(self.path(), edited).unwrap();
    }
}

fn file_kind(format: &'static str) -> Box<dyn Kind> {
    Box::new(FileKind {
        format,
        dir: tempfile::tempdir().unwrap(),
    })
}

/// The `http` kind over pouchdb-server (CouchDB's API): documents `PUT` to their own
/// key's path, revision-conditional writes.
struct CouchKind {
    couch: support::servers::Couch,
}

impl Kind for CouchKind {
    fn label(&self) -> String {
        "http (couchdb)".into()
    }
    fn connector(&mut self) -> Box<dyn Connector> {
        let settings = format!(
            r#"[systems.t]
kind = "http"
base_url = "{}"
[systems.t.collections.t]
path = "/t/_all_docs"
item = "/t/{{key}}"
records = "/rows"
record = "/doc"
key = "id"
params = {{ include_docs = "true" }}
pagination = {{ offset = "skip", limit = "limit", per_page = 4 }}
create = "PUT"
update = "PUT"
version = "_rev"
columns = ["id", "a", "b"]
"#,
            self.couch.url
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("syncline.toml"), &settings).unwrap();
        let config = syncline::config::Config::load(&dir.path().join("syncline.toml")).unwrap();
        connectors::open("t", &config.systems["t"]).unwrap()
    }
    fn insert(&mut self, id: i64, a: &str) {
        self.couch
            .put(&format!("/t/{id}"), serde_json::json!({"id": id, "a": a}));
    }
    fn edit(&mut self, id: i64, a: &str) {
        let mut doc = self.couch.get(&format!("/t/{id}"));
        doc["a"] = serde_json::json!(a);
        self.couch.put(&format!("/t/{id}"), doc);
    }
}

fn sqlite_kind() -> Box<dyn Kind> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
        .unwrap();
    Box::new(SqlKind {
        label: "sqlite",
        db,
        open: Box::new(move || {
            connectors::open(
                "t",
                &syncline::config::SystemSpec::Sqlite(syncline::connectors::sqlite::Settings {
                    path: path.clone(),
                }),
            )
            .unwrap()
        }),
        _keep: None,
        _dir: Some(dir),
    })
}

/// A server kind over test database `db`, reached through `sql` for a person's edits.
fn server_kind<S: Sql + 'static>(
    label: &'static str,
    sql: S,
    db: TempDatabase,
    spec: fn(syncline::config::Secret) -> syncline::config::SystemSpec,
) -> Box<dyn Kind> {
    let url = db.url.clone();
    Box::new(SqlKind {
        label,
        db: sql,
        open: Box::new(move || {
            connectors::open("t", &spec(syncline::config::Secret::new(url.clone()))).unwrap()
        }),
        _keep: Some(db),
        _dir: None,
    })
}

/// Every kind this run can reach.
fn kinds() -> Vec<Box<dyn Kind>> {
    let mut out: Vec<Box<dyn Kind>> = vec![
        sqlite_kind(),
        file_kind("csv"),
        file_kind("jsonl"),
        Box::new(memory_kind("version", Conditional::Version, false)),
        Box::new(memory_kind("none", Conditional::None, false)),
        Box::new(memory_kind("feed", Conditional::Values, true)),
    ];
    if let Some(couch) = support::servers::Couch::start() {
        couch.put("/t", serde_json::json!({}));
        out.push(Box::new(CouchKind { couch }));
    }
    if let Some(url) = server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) {
        let db = TempDatabase::postgres(&url);
        let mut c = db.pg_client();
        c.run_sql("CREATE TABLE t (id bigint PRIMARY KEY, a text, b text)");
        let spec = |url| {
            syncline::config::SystemSpec::Postgres(syncline::connectors::postgres::Settings { url })
        };
        out.push(server_kind("postgres", c, db, spec));
    }
    if let Some(url) = server_url(
        "SYNCLINE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ) {
        let db = TempDatabase::mysql(&url);
        let mut c = db.mysql_conn();
        c.run_sql("CREATE TABLE t (id bigint PRIMARY KEY, a varchar(100), b varchar(100))");
        let spec = |url| {
            syncline::config::SystemSpec::Mysql(syncline::connectors::mysql::Settings { url })
        };
        out.push(server_kind("mariadb", c, db, spec));
    }
    out
}

fn spec() -> ReadSpec {
    ReadSpec {
        collection: "t".into(),
        key: vec!["id".into()],
        columns: vec!["a".into(), "b".into()],
        since: None,
        range: None,
    }
}

/// PostgreSQL digests a table by its rows' versions, and a view (which has none) by its
/// rows' values: both find an edit, and the view's is back to what it was after a revert.
#[test]
fn postgres_digests_a_view_by_its_values() {
    let Some(url) = server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let db = TempDatabase::postgres(&url);
    let mut sql = db.pg_client();
    sql.run_sql(
        "CREATE TABLE base (id bigint PRIMARY KEY, a text, b text);
         INSERT INTO base SELECT g, 'v' || g, NULL FROM generate_series(1, 10) g;
         CREATE VIEW t AS SELECT id, a, b FROM base;",
    );
    let mut c = connectors::open(
        "t",
        &syncline::config::SystemSpec::Postgres(syncline::connectors::postgres::Settings {
            url: syncline::config::Secret::new(db.url.clone()),
        }),
    )
    .unwrap();
    let bounds = [key(4), key(8)];
    let before = c.digests(&spec(), &bounds).unwrap();
    assert_eq!(before.iter().map(|d| d.rows).collect::<Vec<_>>(), [3, 4, 3]);
    sql.run_sql("UPDATE base SET a = 'changed' WHERE id = 5");
    let after = c.digests(&spec(), &bounds).unwrap();
    assert_ne!(after[1], before[1], "the edited record's range");
    assert_eq!((&after[0], &after[2]), (&before[0], &before[2]));
    sql.run_sql("UPDATE base SET a = 'v5' WHERE id = 5");
    assert_eq!(
        c.digests(&spec(), &bounds).unwrap(),
        before,
        "values, not versions"
    );
}

fn key(id: i64) -> Key {
    Key(vec![Value::Integer(id)])
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// The record as read, as a conditional write expects it.
fn as_read(c: &mut dyn Connector, id: i64) -> (Vec<(Name, Value)>, Option<Value>) {
    let r = c.fetch(&spec(), &[key(id)]).unwrap().remove(0);
    (
        vec![
            ("a".into(), r.values[0].clone()),
            ("b".into(), r.values[1].clone()),
        ],
        r.version,
    )
}

#[test]
fn a_scan_delivers_every_record_once_in_batches_in_key_order_where_declared() {
    for mut kind in kinds() {
        // Inserted out of order.
        for id in [17, 3, 25, 1, 9, 14, 2, 30, 8, 21, 5, 11, 19] {
            kind.insert(id, &format!("v{id}"));
        }
        let mut c = kind.connector();
        let mut batches = Vec::new();
        let n = c
            .scan(&spec(), 4, &mut |records| {
                batches.push(records);
                Ok(())
            })
            .unwrap();
        let label = kind.label();
        assert_eq!(n, 13, "{label}");
        assert!(batches.iter().all(|b| b.len() <= 4), "{label}");
        let ids: Vec<i64> = batches
            .iter()
            .flatten()
            .map(|r| match r.key.0[0] {
                Value::Integer(i) => i,
                ref other => panic!("{label}: key {other:?}"),
            })
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 13, "{label}: each record once");
        if c.capabilities().ordered_scan {
            assert_eq!(ids, sorted, "{label}: in key order");
        }
        let fetched = c.fetch(&spec(), &[key(9), key(999)]).unwrap();
        assert_eq!(fetched.len(), 1, "{label}: a missing key is absent");
        assert_eq!(fetched[0].values[0], text("v9"), "{label}");
        assert_eq!(c.count(&spec()).unwrap().unwrap_or(13), 13, "{label}");
        assert!(!c.is_empty(&spec()).unwrap(), "{label}");
    }
}

#[test]
fn a_scan_since_a_value_reads_only_the_records_at_or_past_it() {
    for mut kind in kinds() {
        for (id, a) in [(1, "a"), (2, "k"), (3, "m"), (4, "t"), (5, "z")] {
            kind.insert(id, a);
        }
        let mut c = kind.connector();
        let mut spec = spec();
        spec.since = Some(syncline::connectors::Since {
            column: "a".into(),
            value: text("m"),
        });
        let mut ids = Vec::new();
        c.scan(&spec, 2, &mut |records| {
            ids.extend(records.into_iter().map(|r| r.key.0[0].clone()));
            Ok(())
        })
        .unwrap();
        ids.sort_by_key(|v| v.to_string());
        assert_eq!(
            ids,
            [3, 4, 5].map(Value::Integer),
            "{}: `a >= 'm'`, the bound included",
            kind.label()
        );
    }
}

#[test]
fn range_digests_change_with_their_ranges_only_and_a_range_scans_alone() {
    for mut kind in kinds() {
        let label = kind.label();
        for id in 1..=10 {
            kind.insert(id, &format!("v{id}"));
        }
        let mut c = kind.connector();
        let bounds = [key(4), key(8)];
        let digests = |c: &mut Box<dyn Connector>| match c.digests(&spec(), &bounds) {
            Ok(d) => Some(d),
            Err(syncline::connectors::ConnectorError::Unsupported(_)) => None,
            Err(e) => panic!("{label}: {e}"),
        };
        let Some(before) = digests(&mut c) else {
            continue;
        };
        assert_eq!(
            before.iter().map(|d| d.rows).collect::<Vec<_>>(),
            [3, 4, 3],
            "{label}"
        );
        assert_eq!(
            digests(&mut c).unwrap(),
            before,
            "{label}: the same rows, the same digests"
        );
        kind.edit(5, "changed");
        let after = digests(&mut c).unwrap();
        assert_eq!(after[0], before[0], "{label}");
        assert_ne!(after[1], before[1], "{label}: the edited record's range");
        assert_eq!(after[2], before[2], "{label}");
        // Back to what it was: a digest of values is what it was; one of row versions
        // (PostgreSQL) differs — the row was written — which costs a re-read, no more.
        kind.edit(5, "v5");
        let reverted = digests(&mut c).unwrap();
        if label.starts_with("postgres") {
            assert_ne!(reverted[1], before[1], "{label}: a row version changed");
        } else {
            assert_eq!(reverted, before, "{label}");
        }
        assert_eq!(reverted[0], before[0], "{label}");
        assert_eq!(reverted[2], before[2], "{label}");

        let mut spec = spec();
        spec.range = Some(syncline::connectors::KeyRange {
            from: Some(key(4)),
            to: Some(key(8)),
        });
        let mut ids = Vec::new();
        c.scan(&spec, 3, &mut |records| {
            ids.extend(records.into_iter().map(|r| r.key.0[0].clone()));
            Ok(())
        })
        .unwrap();
        ids.sort_by_key(|v| v.to_string());
        assert_eq!(
            ids,
            [4, 5, 6, 7].map(Value::Integer),
            "{label}: from 4 up to 8"
        );
    }
}

#[test]
fn a_write_to_a_record_changed_since_it_was_read_is_never_made() {
    for mut kind in kinds() {
        let label = kind.label();
        kind.insert(1, "read");
        kind.insert(2, "read");
        let raw = kind.connector();
        let declared = raw.capabilities().conditional;
        let mut c = adapt::wrap(raw);
        let (expect1, version1) = as_read(c.as_mut(), 1);
        let (expect2, version2) = as_read(c.as_mut(), 2);
        kind.edit(1, "edited meanwhile");
        kind.edit(2, "edited meanwhile");
        let out = c
            .apply(
                &spec(),
                &[
                    Write::Update {
                        key: key(1),
                        set: vec![("b".into(), text("syncline"))],
                        expect: expect1,
                        version: version1,
                    },
                    Write::Delete {
                        key: key(2),
                        expect: expect2,
                        version: version2,
                    },
                ],
            )
            .unwrap();
        assert_eq!(
            out.outcomes,
            [WriteOutcome::Stale, WriteOutcome::Stale],
            "{label} (declares {declared:?})"
        );
        let now = c.fetch(&spec(), &[key(1), key(2)]).unwrap();
        assert_eq!(now.len(), 2, "{label}: the delete was not made");
        assert!(
            now.iter().all(|r| r.values[1] == Value::Null),
            "{label}: nor the update"
        );
    }
}

#[test]
fn writes_that_take_effect_say_so_and_are_read_back_as_stored() {
    for mut kind in kinds() {
        let label = kind.label();
        kind.insert(1, "x");
        kind.insert(2, "y");
        let mut c = adapt::wrap(kind.connector());
        let (expect1, version1) = as_read(c.as_mut(), 1);
        let (expect2, version2) = as_read(c.as_mut(), 2);
        let out = c
            .apply(
                &spec(),
                &[
                    Write::Create {
                        values: vec![("id".into(), Value::Integer(7)), ("a".into(), text("new"))],
                    },
                    Write::Update {
                        key: key(1),
                        set: vec![("b".into(), text("set"))],
                        expect: expect1,
                        version: version1,
                    },
                    Write::Delete {
                        key: key(2),
                        expect: expect2,
                        version: version2,
                    },
                ],
            )
            .unwrap();
        assert_eq!(out.outcomes[0], WriteOutcome::Created(key(7)), "{label}");
        assert_eq!(
            out.outcomes[1..],
            [WriteOutcome::Applied, WriteOutcome::Applied],
            "{label}"
        );
        // What was stored, for the create and the update (none for a delete); nothing
        // means "exactly as sent", which must then be true.
        let now: std::collections::HashMap<String, Vec<Value>> = c
            .fetch(&spec(), &[key(7), key(1)])
            .unwrap()
            .into_iter()
            .map(|r| (r.key.encode(), r.values))
            .collect();
        let stored = |i: usize, id: i64| {
            out.stored[i]
                .as_ref()
                .map_or_else(|| now[&key(id).encode()].clone(), |r| r.values.clone())
        };
        assert_eq!(stored(0, 7), [text("new"), Value::Null], "{label}");
        assert_eq!(stored(1, 1), [text("x"), text("set")], "{label}");
        // Fetched in any order: the contract promises order for scans only.
        let mut ids: Vec<String> = c
            .fetch(&spec(), &[key(1), key(2), key(7)])
            .unwrap()
            .into_iter()
            .map(|r| r.key.display_text())
            .collect();
        ids.sort();
        assert_eq!(ids, ["1", "7"], "{label}");
    }
}

#[test]
fn a_version_is_carried_and_a_write_at_an_old_one_is_refused() {
    for mut kind in kinds() {
        let mut c = kind.connector();
        if c.capabilities().conditional != Conditional::Version {
            continue;
        }
        let label = kind.label();
        kind.insert(1, "x");
        let (expect, old) = as_read(c.as_mut(), 1);
        assert!(old.is_some(), "{label}: records carry their version");
        // Edited and edited back: the values are as read, the version is not.
        kind.edit(1, "y");
        kind.edit(1, "x");
        let (_, new) = as_read(c.as_mut(), 1);
        assert_ne!(old, new, "{label}: every write moves the version");
        let out = c
            .apply(
                &spec(),
                &[Write::Update {
                    key: key(1),
                    set: vec![("b".into(), text("z"))],
                    expect,
                    version: old,
                }],
            )
            .unwrap();
        assert_eq!(out.outcomes, [WriteOutcome::Stale], "{label}");
    }
}

#[test]
fn changes_since_a_cursor_are_what_changed_where_a_feed_is_declared() {
    for mut kind in kinds() {
        let label = kind.label();
        kind.insert(1, "a");
        kind.insert(2, "b");
        let mut c = kind.connector();
        let first = c.changes(&spec(), None, 100);
        if !c.capabilities().change_feed {
            assert!(
                matches!(first, Err(ConnectorError::Unsupported(_))),
                "{label}"
            );
            continue;
        }
        let first = first.unwrap();
        assert_eq!(first.upserted.len(), 2, "{label}");
        let cursor = first.cursor.unwrap();
        let again = c.changes(&spec(), Some(&cursor), 100).unwrap();
        assert!(
            again.upserted.is_empty() && again.deleted.is_empty(),
            "{label}: nothing new"
        );
        kind.edit(2, "b2");
        kind.insert(3, "c");
        let next = c.changes(&spec(), Some(&cursor), 100).unwrap();
        let ids: Vec<&Value> = next.upserted.iter().map(|r| &r.key.0[0]).collect();
        assert_eq!(ids, [&Value::Integer(2), &Value::Integer(3)], "{label}");
        assert_eq!(
            next.upserted[0].values[0],
            text("b2"),
            "{label}: as it is now"
        );
        // The cursor never moves backward: from the newer cursor, only what is newer.
        let later = next.cursor.unwrap();
        assert!(
            later.0.parse::<u64>().unwrap() > cursor.0.parse::<u64>().unwrap(),
            "{label}"
        );
        memory_delete(&label, &mut c, 1);
        let last = c.changes(&spec(), Some(&later), 100).unwrap();
        assert_eq!(last.deleted, [key(1)], "{label}");
    }
}

/// Deletes record `id` through the connector (unconditionally as read).
fn memory_delete(label: &str, c: &mut Box<dyn Connector>, id: i64) {
    let (expect, version) = as_read(c.as_mut(), id);
    let out = c
        .apply(
            &spec(),
            &[Write::Delete {
                key: key(id),
                expect,
                version,
            }],
        )
        .unwrap();
    assert_eq!(out.outcomes, [WriteOutcome::Applied], "{label}");
}

#[test]
fn an_unknown_outcome_and_a_batch_that_failed_part_way_are_resolved_by_what_the_system_holds() {
    let mut kind = memory_kind("faults", Conditional::Version, false);
    kind.insert(1, "x");
    kind.insert(2, "y");
    kind.insert(3, "z");
    let mut c = adapt::wrap(kind.connector());
    let write = |c: &mut Box<dyn Connector>, id: i64, b: &str| {
        let (expect, version) = as_read(c.as_mut(), id);
        Write::Update {
            key: key(id),
            set: vec![("b".into(), text(b))],
            expect,
            version,
        }
    };
    // The answer is lost after the writes were made: resolved as made.
    let batch = [write(&mut c, 1, "one"), write(&mut c, 2, "two")];
    memory::inject(&kind.store, memory::Fault::AnswerLost);
    let out = c.apply(&spec(), &batch).unwrap();
    assert_eq!(out.outcomes, [WriteOutcome::Applied, WriteOutcome::Applied]);
    assert_eq!(out.stored[0].as_ref().unwrap().values[1], text("one"));
    // The batch fails after its first write (it is not atomic): the first is made, the
    // second is not, and each is said so — never an error that hides a write.
    let batch = [write(&mut c, 1, "uno"), write(&mut c, 3, "tres")];
    memory::inject(&kind.store, memory::Fault::FailAfter(1));
    let out = c.apply(&spec(), &batch).unwrap();
    assert_eq!(out.outcomes, [WriteOutcome::Applied, WriteOutcome::Stale]);
    let held: Vec<Value> = memory::rows(&kind.store, "t")
        .iter()
        .map(|r| r.get("b").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(held, [text("uno"), text("two"), Value::Null]);
}

// ---- the engine over a kind that is not SQL ------------------------------------------

const LINK: &str = r#"
[links.c]
left = "crm.contacts"
right = "mem.customers"
left_key = "id"
right_key = "cid"
mode = "two-way"
match_on = ["email"]
right_ref = "crm_id"
conflict = "left-wins"
on_delete = { left = "propagate", right = "propagate" }
max_delete_fraction = 1.0
batch_size = 2

[links.c.fields]
email = { owner = "left" }
name = { owner = "both" }
"#;

fn memory_link(store: &str, conditional: Conditional) -> Fixture {
    memory::create(
        store,
        Capabilities {
            conditional,
            ..Capabilities::SQL
        },
    );
    memory::create_collection(
        store,
        "customers",
        &["cid", "email", "name", "crm_id"],
        &["cid"],
    );
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, name TEXT);",
        "",
        "",
    );
    std::fs::write(
        f.config_path(),
        format!(
            "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.mem]\nkind = \"memory\"\npath = \"{store}\"\n{LINK}"
        ),
    )
    .unwrap();
    f
}

fn names(store: &str) -> Vec<String> {
    memory::rows(store, "customers")
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["email"],
                r.get("name").cloned().unwrap_or(Value::Null)
            )
        })
        .collect()
}

#[test]
fn the_engine_syncs_with_a_kind_without_snapshot_atomic_batches_or_conditional_writes() {
    for conditional in [Conditional::None, Conditional::Version] {
        let store = format!("engine-{conditional:?}-{}", std::process::id());
        let f = memory_link(&store, conditional);
        f.left
            .execute_batch(
                "INSERT INTO contacts (email, name) VALUES ('a@x.org', 'Ann'), ('b@x.org', 'Bob'), ('c@x.org', 'Cy');",
            )
            .unwrap();
        // A first load, then quiet.
        let r = f.run();
        assert_eq!(r.links[0].to_right.created, 3, "{:?}", r.links[0]);
        assert_eq!(writes(&f.run()), 0);
        // Edits on both sides flow; a record made on the memory side is created left.
        f.left
            .execute(
                "UPDATE contacts SET name = 'Anna' WHERE email = 'a@x.org'",
                [],
            )
            .unwrap();
        let bob = memory::rows(&store, "customers")
            .into_iter()
            .find(|r| r["email"] == text("b@x.org"))
            .unwrap();
        let mut bob: Vec<(&str, Value)> =
            bob.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        for (k, v) in &mut bob {
            if *k == "name" {
                *v = text("Robert");
            }
        }
        memory::put(&store, "customers", &bob);
        memory::put(
            &store,
            "customers",
            &[
                ("cid", Value::Integer(50)),
                ("email", text("d@x.org")),
                ("name", text("Di")),
            ],
        );
        let r = f.run();
        assert_eq!(
            (
                r.links[0].to_right.updated,
                r.links[0].to_left.updated,
                r.links[0].to_left.created
            ),
            (1, 1, 1),
            "{:?}",
            r.links[0]
        );
        assert_eq!(
            Fixture::rows(&f.left, "SELECT name FROM contacts ORDER BY email"),
            [[text("Anna")], [text("Robert")], [text("Cy")], [text("Di")]]
        );
        assert_eq!(writes(&f.run()), 0, "quiet after edits");
        // The answer to a batch is lost: resolved by what the system holds, and the
        // run after writes nothing (no update made twice, none lost).
        f.left
            .execute("UPDATE contacts SET name = name || '!'", [])
            .unwrap();
        memory::inject(&store, memory::Fault::AnswerLost);
        f.run();
        assert_eq!(
            names(&store),
            [
                "\"a@x.org\"=\"Anna!\"",
                "\"b@x.org\"=\"Robert!\"",
                "\"c@x.org\"=\"Cy!\"",
                "\"d@x.org\"=\"Di!\""
            ]
        );
        assert_eq!(
            writes(&f.run()),
            0,
            "an update resolved as made is not made again"
        );
        // A batch that fails part-way: what was made is kept, the rest is made next run.
        f.left
            .execute("UPDATE contacts SET name = upper(name)", [])
            .unwrap();
        memory::inject(&store, memory::Fault::FailAfter(1));
        f.run();
        f.run();
        assert_eq!(
            names(&store),
            [
                "\"a@x.org\"=\"ANNA!\"",
                "\"b@x.org\"=\"ROBERT!\"",
                "\"c@x.org\"=\"CY!\"",
                "\"d@x.org\"=\"DI!\""
            ]
        );
        assert_eq!(writes(&f.run()), 0);
        // A delete on the memory side propagates; nothing else is taken for deleted.
        memory::delete(&store, "customers", &[Value::Integer(50)]);
        let r = f.run();
        assert_eq!(r.links[0].to_left.deleted, 1, "{:?}", r.links[0]);
        assert_eq!(
            Fixture::rows(&f.left, "SELECT count(*) FROM contacts"),
            [[Value::Integer(3)]]
        );
        assert_eq!(writes(&f.run()), 0);
    }
}

#[test]
fn check_says_a_link_to_a_kind_without_conditional_writes_is_exposed_to_lost_updates() {
    let store = format!("check-{}", std::process::id());
    let f = memory_link(&store, Conditional::None);
    let config = f.config();
    let found = syncline::engine::check_against_systems(&config, &config.links[0]).unwrap();
    assert!(
        found
            .iter()
            .any(|(rule, m)| *rule == "lost-updates" && m.contains("the right (mem)")),
        "{found:?}"
    );
    let store = format!("check-version-{}", std::process::id());
    let f = memory_link(&store, Conditional::Version);
    let config = f.config();
    let found = syncline::engine::check_against_systems(&config, &config.links[0]).unwrap();
    assert!(
        !found.iter().any(|(rule, _)| *rule == "lost-updates"),
        "{found:?}"
    );
}

#[test]
fn a_record_a_listing_missed_is_not_taken_for_deleted() {
    // GIVEN the memory kind on the left, whose listings have no snapshot
    let store = format!("missed-{}", std::process::id());
    memory::create(&store, Capabilities::SQL);
    memory::create_collection(&store, "contacts", &["id", "email", "name"], &["id"]);
    for (id, email) in [(1, "a@x.org"), (2, "b@x.org"), (3, "c@x.org")] {
        memory::put(
            &store,
            "contacts",
            &[
                ("id", Value::Integer(id)),
                ("email", text(email)),
                ("name", text("n")),
            ],
        );
    }
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, name TEXT, crm_id TEXT);",
        "",
    );
    std::fs::write(
        f.config_path(),
        format!(
            "[systems.mem]\nkind = \"memory\"\npath = \"{store}\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n{}",
            LINK.replace("right = \"mem.customers\"", "right = \"billing.customers\"")
                .replace("left = \"crm.contacts\"", "left = \"mem.contacts\"")
        ),
    )
    .unwrap();
    assert_eq!(f.run().links[0].to_right.created, 3);
    // WHEN a listing misses a record (its page shifted) while it is edited on the right
    memory::inject(&store, memory::Fault::ListingMisses(1));
    f.right
        .execute(
            "UPDATE customers SET name = 'edited' WHERE email = 'b@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    // THEN nothing is deleted on either side: a fetch found it, and the edit flowed
    assert_eq!(
        (r.links[0].to_right.deleted, r.links[0].to_left.deleted),
        (0, 0),
        "{:?}",
        r.links[0]
    );
    assert_eq!(memory::rows(&store, "contacts").len(), 3);
    assert_eq!(
        Fixture::rows(&f.right, "SELECT count(*) FROM customers"),
        [[Value::Integer(3)]]
    );
    assert_eq!(memory::rows(&store, "contacts")[1]["name"], text("edited"));
    assert_eq!(writes(&f.run()), 0);
}
