//! Crash safety: the real binary is killed (SIGKILL) at many points of a run over a few
//! thousand records; running again must end exactly where an uninterrupted run ends —
//! no duplicate creates, no lost writes.

mod support;

use rusqlite::Connection;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[systems.crm]
kind = "sqlite"
path = "left.db"

[systems.billing]
kind = "sqlite"
path = "right.db"

[links.c]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "cid"
mode = "two-way"
match_on = ["email"]
right_ref = "crm_id"
conflict = "left-wins"
on_delete = { left = "propagate", right = "propagate" }
max_delete_fraction = 1.0
batch_size = 25

[links.c.fields]
email = { owner = "left", transform = "lowercase" }
name  = { owner = "left" }
notes = { owner = "both" }
plan  = { owner = "right" }
"#;

/// `records` contacts on the left; with `billing_knows`, a third of them and some
/// billing-only customers on the right too, else an empty right (a first load).
fn seed(dir: &Path, records: usize, billing_knows: bool) {
    let left = Connection::open(dir.join("left.db")).unwrap();
    left.execute_batch("CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT, plan TEXT);").unwrap();
    let right = Connection::open(dir.join("right.db")).unwrap();
    right
        .execute_batch("CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT, plan TEXT DEFAULT 'trial', crm_id TEXT);")
        .unwrap();
    let tl = left.unchecked_transaction().unwrap();
    let tr = right.unchecked_transaction().unwrap();
    for i in 0..records {
        tl.execute(
            "INSERT INTO contacts (email, name, notes) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                format!("p{i}@x.org"),
                format!("Person {i}"),
                format!("left note {i}")
            ],
        )
        .unwrap();
        if billing_knows && i % 3 == 0 {
            // Known to billing too, with its own notes and plan: updates both ways.
            tr.execute(
                "INSERT INTO customers (email, name, notes, plan) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    format!("P{i}@X.org"),
                    format!("Person {i}"),
                    format!("right note {i}"),
                    format!("plan-{}", i % 4)
                ],
            )
            .unwrap();
        }
    }
    for j in 0..if billing_knows { records / 6 } else { 0 } {
        tr.execute(
            "INSERT INTO customers (email, name, plan) VALUES (?1, 'Billing only', 'trial')",
            [format!("b{j}@x.org")],
        )
        .unwrap();
    }
    tl.commit().unwrap();
    tr.commit().unwrap();
    std::fs::write(dir.join("syncline.toml"), CONFIG).unwrap();
}

/// With `SYNCLINE_TEST_STATE=postgres` (as `.ci/run` sets for its second pass), the state
/// store of the runs in `dir` lives in a database of its own on the test server, dropped
/// with the returned guard: the same kills, against the shared store.
fn shared_store(dir: &Path) -> Option<support::TempDatabase> {
    if std::env::var("SYNCLINE_TEST_STATE").as_deref() != Ok("postgres") {
        return None;
    }
    let url = std::env::var("SYNCLINE_TEST_PG_URL")
        .expect("SYNCLINE_TEST_STATE=postgres needs SYNCLINE_TEST_PG_URL");
    let db = support::TempDatabase::postgres(&url);
    let config = std::fs::read_to_string(dir.join("syncline.toml")).unwrap();
    std::fs::write(
        dir.join("syncline.toml"),
        format!("[state]\nurl = \"{}\"\n{config}", db.url),
    )
    .unwrap();
    Some(db)
}

/// A new embedded state store in `dir` with `trigger` injected into it (to make the store
/// fail at a chosen moment), and a connection to it.
fn store_with_trigger(dir: &Path, trigger: &str) -> Connection {
    let state_path = dir.join(".syncline/state.db");
    std::fs::create_dir_all(state_path.parent().unwrap()).unwrap();
    drop(syncline::state::StateStore::open(&state_path).unwrap());
    let state = Connection::open(&state_path).unwrap();
    state.execute_batch(trigger).unwrap();
    state
}

fn run(dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_syncline"))
        .current_dir(dir)
        .args(["run", "--json"])
        .output()
        .unwrap()
}

/// Runs until a run writes nothing; returns how long the first run took.
fn run_until_quiet(dir: &Path) -> Duration {
    let mut first = None;
    for _ in 0..5 {
        let start = Instant::now();
        let out = run(dir);
        first.get_or_insert(start.elapsed());
        assert!(
            out.status.code() == Some(0),
            "run failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let writes: u64 = ["to_left", "to_right"]
            .iter()
            .flat_map(|d| {
                ["created", "updated", "deleted"]
                    .map(|k| report["links"][0][d][k].as_u64().unwrap())
            })
            .sum();
        if writes == 0 {
            return first.unwrap();
        }
    }
    panic!("runs never went quiet in {}", dir.display());
}

/// Each side's records by normalized email, keys left out (a re-run may number creates
/// differently, which is fine; a duplicate or a different value is not).
fn snapshot(dir: &Path) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let read = |file: &str, sql: &str| -> Vec<Vec<String>> {
        let c = Connection::open(dir.join(file)).unwrap();
        let mut stmt = c.prepare(sql).unwrap();
        stmt.query_map([], |r| {
            // NULL is not '': a run that turned one into the other is caught.
            Ok((0..4)
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .unwrap()
                        .unwrap_or_else(|| "<NULL>".into())
                })
                .collect())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    (
        read(
            "left.db",
            "SELECT lower(email), name, notes, plan FROM contacts ORDER BY lower(email)",
        ),
        read(
            "right.db",
            "SELECT lower(email), name, notes, plan FROM customers ORDER BY lower(email)",
        ),
    )
}

/// Kills `syncline run` at `points` moments spread over an uninterrupted run's duration,
/// then runs again until quiet, and compares with the uninterrupted result.
fn kill_at_many_points(records: usize, billing_knows: bool, points: u32) {
    let reference = tempfile::tempdir().unwrap();
    seed(reference.path(), records, billing_knows);
    let _reference_store = shared_store(reference.path());
    let first_run = run_until_quiet(reference.path());
    let expected = snapshot(reference.path());
    assert_eq!(
        expected.0, expected.1,
        "the uninterrupted run itself did not converge"
    );
    let billing_only = if billing_knows { records / 6 } else { 0 };
    assert_eq!(expected.0.len(), records + billing_only);

    let mut killed_mid_run = 0;
    // The reference run's duration sets the kill times. If a run is already over when
    // its kill comes (this machine got less busy than while the reference ran), later
    // kills aim earlier, so most still land inside a run.
    let mut timescale = 1.0;
    for k in 1..=points {
        let dir = tempfile::tempdir().unwrap();
        seed(dir.path(), records, billing_knows);
        let _store = shared_store(dir.path());
        let delay = first_run.mul_f64(timescale * f64::from(k) / f64::from(points + 1));
        let mut child = Command::new(env!("CARGO_BIN_EXE_syncline"))
            .current_dir(dir.path())
            .arg("run")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        } else {
            timescale *= 0.6;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        run_until_quiet(dir.path());
        let got = snapshot(dir.path());
        assert_eq!(
            got.0.len(),
            expected.0.len(),
            "left record count after a kill at {delay:?}"
        );
        assert_eq!(
            got.1.len(),
            expected.1.len(),
            "right record count after a kill at {delay:?} (duplicates?)"
        );
        assert_eq!(
            got, expected,
            "state after a kill at {delay:?} differs from an uninterrupted run"
        );
    }
    // The kills must really land inside runs for this test to mean anything.
    assert!(
        killed_mid_run >= points / 2,
        "only {killed_mid_run} of {points} kills landed while the run was going"
    );
}

#[test]
fn killing_a_run_at_any_point_ends_in_the_same_state() {
    kill_at_many_points(3000, true, 12);
}

#[test]
fn killing_a_first_load_at_any_point_creates_nothing_twice() {
    kill_at_many_points(3000, false, 8);
}

/// A first load whose state store refuses to journal a batch (a trigger injected into
/// the store fails the ninth batch's entry) stops there with the error, and what the
/// target had already confirmed is committed anyway: every record written is in the id
/// map, and no journaled batch is left `planned`. The next run creates the rest, nothing
/// twice.
#[test]
fn a_first_load_whose_journal_fails_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path(), 500, false);
    let state = store_with_trigger(
        dir.path(),
        "CREATE TRIGGER injected BEFORE INSERT ON journal
           WHEN NEW.records IS NOT NULL AND (SELECT count(*) FROM journal WHERE records IS NOT NULL) >= 8
         BEGIN SELECT RAISE(ABORT, 'injected journal failure'); END;",
    );

    let out = run(dir.path());
    assert_ne!(out.status.code(), Some(0), "the run should have failed");
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains("injected journal failure"),
        "the error is not the injected one: {stderr}"
    );
    let count =
        |conn: &Connection, sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let right = Connection::open(dir.path().join("right.db")).unwrap();
    let written = count(&right, "SELECT count(*) FROM customers");
    let paired = count(&state, "SELECT count(*) FROM pairs WHERE link = 'c'");
    // Batches of 25: eight journaled, the ninth refused; all eight went out.
    assert_eq!(written, 8 * 25, "records written before the failure");
    assert_eq!(
        paired, written,
        "a written record is missing from the id map"
    );
    // As `log` shows it: the eight batches' entries applied, nothing left planned.
    let log = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .current_dir(dir.path())
        .args(["log", "--json", "--run", "1"])
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&log.stdout)
        .unwrap_or_else(|e| panic!("log --json: {e}: {}", String::from_utf8_lossy(&log.stdout)));
    let statuses: Vec<(String, i64)> = entries["journal"]
        .as_array()
        .expect("log --json lists entries")
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap().to_string(),
                e["records"].as_i64().unwrap_or(1),
            )
        })
        .collect();
    let expected = vec![("applied".to_string(), 25); 8];
    assert_eq!(statuses, expected, "the journal after the failure");

    state.execute_batch("DROP TRIGGER injected").unwrap();
    drop(state);
    run_until_quiet(dir.path());
    let (left, right) = snapshot(dir.path());
    assert_eq!(right.len(), 500, "records created twice or not at all");
    assert_eq!(left, right);
}

/// A crash after the receiving system committed a batch and before the state store did,
/// on a one-way link whose only create identity is its carried key (no `match_on`, no
/// `right_ref`): the store refuses the batch's pairs (a trigger injected into the store),
/// so the rows are on the right and the id map knows nothing of them. The next run finds
/// them by their key instead of creating them again — which the right's primary key
/// would refuse, every run, forever.
#[test]
fn a_carried_key_finds_what_a_crash_left_unrecorded() {
    let dir = tempfile::tempdir().unwrap();
    let left = Connection::open(dir.path().join("left.db")).unwrap();
    left.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER);",
    )
    .unwrap();
    for i in 1..=200 {
        left.execute(
            "INSERT INTO orders VALUES (?1, ?2, ?3)",
            rusqlite::params![i, format!("item {i}"), i % 7],
        )
        .unwrap();
    }
    let right = Connection::open(dir.path().join("right.db")).unwrap();
    right
        .execute_batch(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, item TEXT NOT NULL, qty INTEGER);",
        )
        .unwrap();
    std::fs::write(
        dir.path().join("syncline.toml"),
        "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n
[links.o]\nleft = \"crm.orders\"\nright = \"billing.orders\"\nleft_key = \"id\"\nright_key = \"order_id\"\nmode = \"one-way\"\nbatch_size = 25\n
[links.o.fields]\nid = { right = \"order_id\" }\nitem = {}\nqty = {}\n",
    )
    .unwrap();
    let state = store_with_trigger(
        dir.path(),
        "CREATE TRIGGER injected BEFORE INSERT ON pairs WHEN (SELECT count(*) FROM pairs) >= 50
         BEGIN SELECT RAISE(ABORT, 'injected store failure'); END;",
    );
    let out = run(dir.path());
    assert_ne!(out.status.code(), Some(0), "the run should have failed");
    let count =
        |conn: &Connection, sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let written = count(&right, "SELECT count(*) FROM orders");
    let paired = count(&state, "SELECT count(*) FROM pairs");
    assert!(
        written > paired,
        "the crash must leave rows on the right the store does not know: {written} written, {paired} paired"
    );
    state.execute_batch("DROP TRIGGER injected").unwrap();
    drop(state);
    // WHEN run again THEN nothing is refused or duplicated, and the sides are equal
    let out = run(dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(dir.path());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(r#""to_right":{"created":0,"updated":0,"deleted":0"#),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(count(&right, "SELECT count(*) FROM orders"), 200);
    let rows = |conn: &Connection, sql: &str| -> Vec<(String, String, i64)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })?,
                    r.get(1)?,
                    r.get(2)?,
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<Vec<_>>>()
            .unwrap()
    };
    let mut l = rows(&left, "SELECT id, item, qty FROM orders");
    let mut r = rows(&right, "SELECT order_id, item, qty FROM orders");
    l.sort();
    r.sort();
    assert_eq!(l, r);
}

/// The edits of an incremental run over a first load of `seed(…, true)`: updates on both
/// sides (the same field on both: a conflict, left wins), drift on a left-owned field,
/// write-back of a right-owned one, deletes on both sides, creates on both sides.
fn edit_both_sides(dir: &Path) {
    let left = Connection::open(dir.join("left.db")).unwrap();
    let right = Connection::open(dir.join("right.db")).unwrap();
    left.execute_batch(
        "UPDATE contacts SET notes = 'left edit ' || id WHERE id % 5 = 0;
         UPDATE contacts SET name = NULL WHERE id % 11 = 0;
         DELETE FROM contacts WHERE id % 17 = 0;
         INSERT INTO contacts (email, name, notes) VALUES ('new.left1@x.org', 'New L1', NULL), ('new.left2@x.org', NULL, 'n');",
    )
    .unwrap();
    right
        .execute_batch(
            "UPDATE customers SET notes = 'right edit ' || cid WHERE cid % 5 = 0 OR cid % 7 = 0;
             UPDATE customers SET plan = 'gold' WHERE cid % 4 = 0;
             UPDATE customers SET name = 'drifted' WHERE cid % 13 = 0;
             DELETE FROM customers WHERE cid % 19 = 0;
             INSERT INTO customers (email, name, plan) VALUES ('new.right@x.org', 'New R', 'trial');",
        )
        .unwrap();
}

/// The state store agrees with both sides: a pair per record, each naming records that
/// exist, none left behind.
fn store_agrees_with_both_sides(dir: &Path) {
    let config = syncline::config::Config::load(&dir.join("syncline.toml")).unwrap();
    let mut state = syncline::state::StateStore::for_config(&config.state, true).unwrap();
    let ids = |file: &str, sql: &str| -> Vec<i64> {
        let c = Connection::open(dir.join(file)).unwrap();
        let mut stmt = c.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let left = ids("left.db", "SELECT id FROM contacts");
    let right: std::collections::HashSet<String> = ids("right.db", "SELECT cid FROM customers")
        .into_iter()
        .map(|k| syncline::model::Key::single(syncline::model::Value::Integer(k)).encode())
        .collect();
    let keys: Vec<String> = left
        .iter()
        .map(|k| syncline::model::Key::single(syncline::model::Value::Integer(*k)).encode())
        .collect();
    let pairs = state
        .pairs_by("c", syncline::model::Side::Left, &keys)
        .unwrap();
    assert_eq!(pairs.len(), left.len(), "a left record without a pair");
    assert_eq!(
        state.pair_count("c").unwrap() as usize,
        left.len(),
        "pairs of records that are gone"
    );
    for p in pairs.values() {
        assert!(
            right.contains(&p.right_key),
            "a pair names a right record that is gone: {}",
            p.right_key
        );
    }
    assert_eq!(right.len(), left.len());
}

/// Deterministic crash points: the process dies (abort, as under SIGKILL) exactly at each
/// named step of a batch — after journaling, mid-batch, after the receiver commits,
/// before and after the store commits — in a first load (its creates and the write-back
/// of what the receiver filled) and in an incremental run with updates, conflicts,
/// drift, deletes and creates; then dies again at the same step during recovery. Every time, running on ends exactly where an uninterrupted run ends,
/// and the state store agrees with both sides.
#[test]
fn a_crash_at_each_named_point_ends_where_an_uninterrupted_run_ends() {
    for incremental in [false, true] {
        let prepare = |dir: &Path| {
            seed(dir, 150, incremental);
            // A delete racing an edit of the same record is decided, not held.
            let config = std::fs::read_to_string(dir.join("syncline.toml")).unwrap();
            std::fs::write(
                dir.join("syncline.toml"),
                config.replace(
                    "max_delete_fraction",
                    "delete_vs_edit = \"delete-wins\"\nmax_delete_fraction",
                ),
            )
            .unwrap();
            let store = shared_store(dir);
            if incremental {
                run_until_quiet(dir);
                edit_both_sides(dir);
            }
            store
        };
        let reference = tempfile::tempdir().unwrap();
        let _reference_store = prepare(reference.path());
        run_until_quiet(reference.path());
        let expected = snapshot(reference.path());
        assert_eq!(
            expected.0, expected.1,
            "the uninterrupted run did not converge"
        );
        // Billing's default plan flowed back to the CRM's records it created: the runs
        // below also crash in those writes (the 9th batch of a first load is one of them).
        assert!(
            expected.0.iter().any(|r| r[3] == "trial"),
            "no flow-back to crash in"
        );
        for point in syncline::fault::POINTS {
            let mut landed = 0;
            for nth in [1, 3, 9] {
                let dir = tempfile::tempdir().unwrap();
                let _store = prepare(dir.path());
                let spec = format!("{point}:{nth}");
                let crashed = |dir: &Path, spec: &str| -> bool {
                    let out = Command::new(env!("CARGO_BIN_EXE_syncline"))
                        .current_dir(dir)
                        .env("SYNCLINE_FAULT", spec)
                        .args(["run", "--json"])
                        .output()
                        .unwrap();
                    // Aborted: killed by a signal, no exit code.
                    out.status.code().is_none()
                };
                if crashed(dir.path(), &spec) {
                    landed += 1;
                    // A second crash at the same step, during recovery.
                    crashed(dir.path(), &format!("{point}:1"));
                }
                run_until_quiet(dir.path());
                assert_eq!(
                    snapshot(dir.path()),
                    expected,
                    "after a crash at {spec} ({})",
                    if incremental {
                        "incremental run"
                    } else {
                        "first load"
                    }
                );
                store_agrees_with_both_sides(dir.path());
            }
            assert!(landed > 0, "no crash landed at {point} ({incremental})");
        }
    }
}
