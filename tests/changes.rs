//! Cycles that read what changed (`[links.NAME.changes]`): how much they read, what they
//! find, and that a cursor never runs ahead of the state it covers.

mod support;

use support::{Fixture, run_binary, text, writes};
use syncline::model::Value;

/// Both sides keep a version counter that every insert and every edit of `name` bumps,
/// as a row version or an `updated_at` would.
const SCHEMA: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT, version INTEGER NOT NULL DEFAULT 0);
    CREATE TRIGGER stamp_new AFTER INSERT ON contacts BEGIN
        UPDATE contacts SET version = (SELECT MAX(version) + 1 FROM contacts) WHERE id = new.id; END;
    CREATE TRIGGER stamp_edit AFTER UPDATE OF name ON contacts BEGIN
        UPDATE contacts SET version = (SELECT MAX(version) + 1 FROM contacts) WHERE id = new.id; END;";

fn link(lookback: i64, full_every: u32, extra: &str) -> String {
    format!(
        r#"[links.contacts]
left = "crm.contacts"
right = "billing.contacts"
mode = "two-way"
conflict = "left-wins"
on_delete = {{ left = "propagate", right = "propagate" }}
{extra}
[links.contacts.fields]
name = {{}}

[links.contacts.changes]
left = {{ cursor = "version", lookback = {lookback} }}
right = {{ cursor = "version", lookback = {lookback} }}
full_every = {full_every}
"#
    )
}

fn fixture(lookback: i64, full_every: u32) -> Fixture {
    let f = Fixture::new(SCHEMA, SCHEMA, &link(lookback, full_every, ""));
    for i in 1..=100 {
        f.left
            .execute(
                "INSERT INTO contacts (id, name) VALUES (?1, ?2)",
                rusqlite::params![i, format!("n{i}")],
            )
            .unwrap();
    }
    f
}

fn name_of(conn: &rusqlite::Connection, id: i64) -> Option<Value> {
    Fixture::rows(conn, &format!("SELECT name FROM contacts WHERE id = {id}"))
        .into_iter()
        .next()
        .map(|mut r| r.remove(0))
}

/// Runs until both sides have a cursor position (a first load, then a full read).
fn settle(f: &Fixture) {
    for _ in 0..2 {
        f.run();
    }
    let r = f.run();
    assert!(
        r.links[0].reading.contains("changes since"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(writes(&r), 0);
}

#[test]
fn a_cursor_cycle_reads_only_what_changed_and_the_lookback_window() {
    let f = fixture(0, 100);
    settle(&f);
    // Nothing changed: each side re-reads only the record at its position.
    let idle = f.run();
    let l = &idle.links[0];
    assert!(l.left_records <= 1 && l.right_records <= 1, "{l:?}");
    assert_eq!(writes(&idle), 0);

    for id in [10, 20, 30] {
        f.left
            .execute("UPDATE contacts SET name = 'edited' WHERE id = ?1", [id])
            .unwrap();
    }
    f.right
        .execute("UPDATE contacts SET name = 'from right' WHERE id = 40", [])
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!((3..=4).contains(&l.left_records), "{l:?}");
    assert!((1..=2).contains(&l.right_records), "{l:?}");
    assert_eq!(l.to_right.updated, 3);
    assert_eq!(l.to_left.updated, 1);
    assert_eq!(name_of(&f.right, 20), Some(text("edited")));
    assert_eq!(name_of(&f.left, 40), Some(text("from right")));
    // What it wrote bumped the cursors on the receiving sides: read again, nothing to do.
    assert_eq!(writes(&f.run()), 0);
    assert_eq!(writes(&f.run()), 0);
    let status = support::syncline(f.path()).arg("status").output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("reads: left by `version` at ")
            && status.contains("right by `version` at "),
        "{status}"
    );
}

#[test]
fn a_change_committed_late_with_an_older_cursor_is_synced_inside_the_lookback() {
    let f = fixture(5, 100);
    settle(&f);
    let top: i64 = f
        .left
        .query_row("SELECT MAX(version) FROM contacts", [], |r| r.get(0))
        .unwrap();
    // Committed after a newer change was read, stamped before it.
    f.left
        .execute("UPDATE contacts SET name = 'late' WHERE id = 50", [])
        .unwrap();
    f.left
        .execute("UPDATE contacts SET version = ?1 WHERE id = 50", [top - 2])
        .unwrap();
    // Further back than the window: not read by a cursor cycle…
    f.left
        .execute("UPDATE contacts SET name = 'very late' WHERE id = 60", [])
        .unwrap();
    f.left
        .execute("UPDATE contacts SET version = 1 WHERE id = 60", [])
        .unwrap();
    let r = f.run();
    assert!(r.links[0].left_records < 10, "{:?}", r.links[0]);
    assert_eq!(name_of(&f.right, 50), Some(text("late")));
    assert_eq!(name_of(&f.right, 60), Some(text("n60")));
}

#[test]
fn a_full_read_every_full_every_cycles_finds_deletes_and_what_cursors_missed() {
    let f = fixture(0, 3);
    f.run();
    f.run();
    f.left
        .execute("DELETE FROM contacts WHERE id = 7", [])
        .unwrap();
    f.left
        .execute("UPDATE contacts SET name = 'unstamped' WHERE id = 8", [])
        .unwrap();
    f.left
        .execute("UPDATE contacts SET version = 0 WHERE id = 8", [])
        .unwrap();
    // Cursor cycles until a full one is due: the delete waits for it.
    let mut found = false;
    for _ in 0..3 {
        let r = f.run();
        if r.links[0].reading.starts_with("full") {
            assert_eq!(r.links[0].to_right.deleted, 1, "{:?}", r.links[0]);
            found = true;
            break;
        }
        assert_eq!(name_of(&f.right, 7), Some(text("n7")));
    }
    assert!(found, "no full read within full_every cycles");
    assert_eq!(name_of(&f.right, 7), None);
    assert_eq!(name_of(&f.right, 8), Some(text("unstamped")));
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_new_record_that_may_pair_by_identity_makes_the_cycle_read_in_full() {
    let f = Fixture::new(SCHEMA, SCHEMA, &link(0, 100, "match_on = [\"name\"]"));
    f.left
        .execute("INSERT INTO contacts (id, name) VALUES (1, 'a')", [])
        .unwrap();
    settle(&f);
    // A right record that exists, unpaired and unchanged, and a new left one it matches:
    // a cursor read of the left alone would create a duplicate.
    f.right
        .execute("INSERT INTO contacts (id, name) VALUES (500, 'solo')", [])
        .unwrap();
    f.right
        .execute("UPDATE contacts SET version = 0 WHERE id = 500", [])
        .unwrap();
    f.left
        .execute("INSERT INTO contacts (id, name) VALUES (2, 'solo')", [])
        .unwrap();
    let r = f.run();
    assert!(
        r.links[0].reading.starts_with("full (1 new or unpaired"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(r.links[0].to_right.created, 0, "{:?}", r.links[0]);
    let solos: i64 = f
        .right
        .query_row(
            "SELECT COUNT(*) FROM contacts WHERE name = 'solo'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(solos, 1);
}

#[test]
fn a_crash_before_the_cycle_ends_is_followed_by_a_full_read_that_neither_skips_nor_repeats() {
    let f = fixture(0, 100);
    settle(&f);
    f.left
        .execute("UPDATE contacts SET name = 'crashed' WHERE id = 3", [])
        .unwrap();
    // The receiver committed the write; the store never heard.
    let out = support::syncline(f.path())
        .arg("run")
        .env("SYNCLINE_FAULT", "after_receiver_commit:1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(name_of(&f.right, 3), Some(text("crashed")));
    let r = f.run();
    assert!(
        r.links[0].reading.contains("did not finish"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(writes(&r), 0, "the write is found made, not made again");
    let again = f.run();
    assert!(again.links[0].reading.contains("changes since"));
    assert_eq!(writes(&again), 0);
    let (code, err) = run_binary(f.path());
    assert_eq!(code, Some(0), "{err}");
}
