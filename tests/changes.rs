//! Cycles that read what changed (`[links.NAME.changes]`): how much they read, what they
//! find, and that a cursor never runs ahead of the state it covers.

mod support;

use support::{Fixture, run_binary, text, writes};
use syncline::model::Value;

/// Both sides keep a version counter that every insert and every edit of `name` bumps,
/// as a row version or an `updated_at` would.
/// The counter never goes backward, not even when the newest row is deleted.
const SCHEMA: &str =
    "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT, version INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0);
    CREATE TRIGGER stamp_new AFTER INSERT ON contacts BEGIN
        UPDATE counter SET n = n + 1;
        UPDATE contacts SET version = (SELECT n FROM counter) WHERE id = new.id; END;
    CREATE TRIGGER stamp_edit AFTER UPDATE OF name ON contacts BEGIN
        UPDATE counter SET n = n + 1;
        UPDATE contacts SET version = (SELECT n FROM counter) WHERE id = new.id; END;";

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
    seeded(&link(lookback, full_every, ""), 100)
}

/// A fixture for `link` whose left holds `rows` records, `n1`…
fn seeded(link: &str, rows: i64) -> Fixture {
    let f = Fixture::new(SCHEMA, SCHEMA, link);
    for i in 1..=rows {
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
    quiet_cursor_cycle(f);
}

/// One more cycle, which reads by cursor and writes nothing.
fn quiet_cursor_cycle(f: &Fixture) {
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
    // The left read writes its three edits as it reads (they bump the right's cursor
    // column), so the right read, after it, reads them too.
    assert!((1..=5).contains(&l.right_records), "{l:?}");
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
    new_record_whose_partner_did_not_change(&f, 500, 2, "solo");
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

/// Inserts an unpaired right record (`right_id`) that no cursor read sees, and a new left
/// one (`left_id`) that pairs with it.
fn plant_unchanged_partner(f: &Fixture, right_id: i64, left_id: i64, name: &str) {
    f.right
        .execute(
            "INSERT INTO contacts (id, name) VALUES (?1, ?2)",
            rusqlite::params![right_id, name],
        )
        .unwrap();
    f.right
        .execute("UPDATE contacts SET version = 0 WHERE id = ?1", [right_id])
        .unwrap();
    f.left
        .execute(
            "INSERT INTO contacts (id, name) VALUES (?1, ?2)",
            rusqlite::params![left_id, name],
        )
        .unwrap();
}

/// An unpaired right record (`right_id`) that no cursor read sees, and a new left one
/// (`left_id`) that pairs with it: the run reads in full and creates nothing.
fn new_record_whose_partner_did_not_change(f: &Fixture, right_id: i64, left_id: i64, name: &str) {
    plant_unchanged_partner(f, right_id, left_id, name);
    let r = f.run();
    assert!(
        r.links[0].reading.starts_with("full (1 new or unpaired"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(r.links[0].to_right.created, 0, "{:?}", r.links[0]);
}

#[test]
fn a_new_record_paired_by_a_carried_key_is_checked_by_a_fetch_not_a_full_read() {
    let carried = link(0, 100, "").replace("name = {}", "id = {}\nname = {}");
    let f = Fixture::new(SCHEMA, SCHEMA, &carried);
    f.left
        .execute("INSERT INTO contacts (id, name) VALUES (1, 'a')", [])
        .unwrap();
    settle(&f);
    // A new left record whose key nothing on the right holds: created, read by cursor.
    f.left
        .execute("INSERT INTO contacts (id, name) VALUES (2, 'b')", [])
        .unwrap();
    let r = f.run();
    assert!(
        r.links[0].reading.contains("changes since"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(r.links[0].to_right.created, 1, "{:?}", r.links[0]);
    // One whose key an unpaired, unchanged right record holds: that is its partner, and
    // only a full read pairs them (a cursor read alone would create a duplicate).
    new_record_whose_partner_did_not_change(&f, 3, 3, "c");
    let threes: i64 = f
        .right
        .query_row("SELECT COUNT(*) FROM contacts WHERE id = 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(threes, 1);
    assert_eq!(writes(&f.run()), 0);
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

/// How many right records hold `name` values starting with `prefix`.
fn right_names_like(f: &Fixture, prefix: &str) -> i64 {
    f.right
        .query_row(
            "SELECT COUNT(*) FROM contacts WHERE name LIKE ?1 || '%'",
            [prefix],
            |r| r.get(0),
        )
        .unwrap()
}

#[test]
fn a_cursor_read_of_many_batches_writes_as_it_reads_and_a_crash_mid_way_neither_skips_nor_repeats()
{
    // A streamed read reads in quarter batches: ten records each.
    let f = seeded(&link(0, 100, "batch_size = 40"), 100);
    settle(&f);
    let edit = |prefix: &str| {
        for id in 1..=35 {
            f.left
                .execute(
                    "UPDATE contacts SET name = ?1 || id WHERE id = ?2",
                    rusqlite::params![prefix, id],
                )
                .unwrap();
        }
    };
    // Four batches, streamed: all written, in one run, and nothing left for the next.
    edit("streamed ");
    let r = f.run();
    let l = &r.links[0];
    assert!(l.reading.contains("changes since"), "{}", l.reading);
    assert_eq!(l.to_right.updated, 35, "{l:?}");
    assert_eq!(right_names_like(&f, "streamed "), 35);
    assert_eq!(writes(&f.run()), 0);

    // The second batch's writes committed on the right, and the store never heard: the
    // first batch is committed, the rest not yet written.
    edit("crashed ");
    let out = support::syncline(f.path())
        .arg("run")
        .env("SYNCLINE_FAULT", "after_receiver_commit:2")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    // Two batches of ten records read (the first also re-reads the one at the cursor).
    let written = right_names_like(&f, "crashed ");
    assert!((19..=20).contains(&written), "{written}");
    let r = f.run();
    let l = &r.links[0];
    assert!(l.reading.contains("did not finish"), "{}", l.reading);
    assert_eq!(
        l.to_right.updated as i64,
        35 - written,
        "the written batches are found made: {l:?}"
    );
    assert_eq!(right_names_like(&f, "crashed "), 35);
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn more_new_records_than_a_cursor_cycle_checks_one_by_one_make_it_read_in_full() {
    let carried = link(0, 100, "").replace("name = {}", "id = {}\nname = {}");
    let f = seeded(&carried, 10);
    settle(&f);
    // Past 10,000 new records, asking the right for each one's key costs more than
    // reading it whole.
    f.left
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 11 UNION ALL SELECT i + 1 FROM n WHERE i < 10011)
             INSERT INTO contacts (id, name) SELECT i, 'new ' || i FROM n;",
        )
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!(
        l.reading.starts_with("full (10001 new or unpaired"),
        "{}",
        l.reading
    );
    assert_eq!(l.to_right.created, 10_001, "{l:?}");
    quiet_cursor_cycle(&f);
}

/// Crashes at each named point of a streamed cursor read of four batches (edits on both
/// sides, the right's read after the left's streamed writes): running on ends where an
/// uninterrupted run ends.
#[test]
fn a_crash_at_each_point_of_a_streamed_cursor_read_ends_where_an_uninterrupted_run_ends() {
    crash_at_each_point(&link(0, 100, "batch_size = 40"), "id % 9 = 0");
}

/// The same with the right read only by reconciliations, so the left's cursor read
/// assumes its partners: the right's edits are on records the left changed too, so
/// their writes find them otherwise and are decided again in the same cycle.
#[test]
fn a_crash_at_each_point_of_a_read_that_assumes_partners_ends_where_an_uninterrupted_run_ends() {
    let left_cursor_only = link(0, 100, "batch_size = 40")
        .replace("right = { cursor = \"version\", lookback = 0 }\n", "");
    assert!(!left_cursor_only.contains("right = {"));
    crash_at_each_point(&left_cursor_only, "id % 9 = 0 AND id <= 35");
}

/// Left records 1–35 and the right records `right_edited` are edited; then, for every
/// named fault point, twice each, a run crashes there and runs follow until quiet: each
/// ends where an uninterrupted run ends.
fn crash_at_each_point(link: &str, right_edited: &str) {
    let prepare = || {
        let f = seeded(link, 100);
        settle(&f);
        f.left
            .execute_batch("UPDATE contacts SET name = 'left ' || id WHERE id <= 35")
            .unwrap();
        f.right
            .execute_batch(&format!(
                "UPDATE contacts SET name = 'right ' || id WHERE {right_edited}"
            ))
            .unwrap();
        f
    };
    let names = |f: &Fixture| {
        let sql = "SELECT id, name FROM contacts ORDER BY id";
        (Fixture::rows(&f.left, sql), Fixture::rows(&f.right, sql))
    };
    let until_quiet = |f: &Fixture| {
        for _ in 0..4 {
            if writes(&f.run()) == 0 {
                return;
            }
        }
        panic!("no quiet run");
    };
    let reference = prepare();
    until_quiet(&reference);
    let expected = names(&reference);
    assert_eq!(expected.0, expected.1);
    for point in syncline::fault::POINTS {
        for nth in [1, 2] {
            let f = prepare();
            let spec = format!("{point}:{nth}");
            let out = support::syncline(f.path())
                .arg("run")
                .env("SYNCLINE_FAULT", &spec)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), None, "no crash at {spec}");
            until_quiet(&f);
            assert_eq!(names(&f), expected, "after a crash at {spec}");
        }
    }
}

#[test]
fn deletes_a_streamed_cursor_read_finds_are_weighed_by_the_valve_before_any_is_made() {
    // A look-back that re-reads every left record: those whose right partner is gone
    // are deletes (propagated to the left), in every batch.
    let f = seeded(&link(1000, 100, "batch_size = 40"), 100);
    settle(&f);
    f.right
        .execute("DELETE FROM contacts WHERE id <= 60", [])
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!(l.reading.contains("changes since"), "{}", l.reading);
    assert!(l.refused.is_some(), "{l:?}");
    let left: i64 = f
        .left
        .query_row("SELECT COUNT(*) FROM contacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        left, 100,
        "no delete made before the valve weighed them all"
    );
}

/// With partners assumed (the right read only by reconciliations): the left edited 60
/// records whose right partners are gone, so their writes find nothing and are decided
/// again from both sides — an edit against a delete, held for a person as the link's
/// `delete_vs_edit` says, never a delete made on the strength of a write that missed.
#[test]
fn writes_to_assumed_partners_that_are_gone_delete_nothing() {
    let left_cursor_only = link(0, 100, "batch_size = 40")
        .replace("right = { cursor = \"version\", lookback = 0 }\n", "");
    let f = seeded(&left_cursor_only, 100);
    settle(&f);
    f.right
        .execute("DELETE FROM contacts WHERE id <= 60", [])
        .unwrap();
    f.left
        .execute("UPDATE contacts SET name = 'edited' WHERE id <= 60", [])
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!(l.reading.contains("right not read"), "{}", l.reading);
    assert_eq!(
        (l.quarantined, l.to_right.updated, l.to_right.stale_skipped),
        (60, 0, 0),
        "{l:?}"
    );
    assert_eq!(writes(&r), 0, "{l:?}");
    let left: i64 = f
        .left
        .query_row("SELECT COUNT(*) FROM contacts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 100, "nothing deleted");
}

#[test]
fn a_streamed_cursor_read_that_must_read_in_full_counts_what_it_already_wrote() {
    let carried = link(0, 100, "batch_size = 2").replace("name = {}", "id = {}\nname = {}");
    let f = seeded(&carried, 10);
    settle(&f);
    for id in [1, 2, 3, 4, 5] {
        f.left
            .execute("UPDATE contacts SET name = 'edited' WHERE id = ?1", [id])
            .unwrap();
    }
    // Read after the five edits, a new record whose key an unchanged, unpaired right
    // record holds: only a full read can pair them, which the cycle finds at its end,
    // after it wrote the edits.
    plant_unchanged_partner(&f, 50, 50, "same");
    let r = f.run();
    let l = &r.links[0];
    assert!(
        l.reading.starts_with("full (1 new or unpaired"),
        "{}",
        l.reading
    );
    assert_eq!(l.to_right.updated, 5, "{l:?}");
    assert_eq!(l.to_right.created, 0, "{l:?}");
    assert_eq!(right_names_like(&f, "edited"), 5);
    assert_eq!(writes(&f.run()), 0);
}

/// The base the store keeps for the record `id` of the `contacts` link, field `name`.
fn base_name(f: &Fixture, id: i64) -> Option<Value> {
    use syncline::model::{Key, Side};
    let key = Key::single(Value::Integer(id)).encode();
    let mut pairs = f
        .store()
        .pairs_by("contacts", Side::Left, std::slice::from_ref(&key))
        .unwrap();
    pairs.remove(&key)?.base.get("name").cloned()
}

#[test]
fn a_streamed_batch_that_writes_nothing_still_moves_its_bases() {
    // One-way, the left read by cursor: a record edited to the same value on both sides
    // is agreed without a write, and the streamed batch holding only it is committed
    // all the same (a batch with no writes was once never committed: its base stayed
    // behind until a full read).
    let one_way = r#"[links.contacts]
left = "crm.contacts"
right = "billing.contacts"
[links.contacts.fields]
name = {}
[links.contacts.changes]
left = { cursor = "version", lookback = 0 }
full_every = 100
"#;
    let f = seeded(one_way, 20);
    settle(&f);
    for side in [&f.left, &f.right] {
        side.execute("UPDATE contacts SET name = 'agreed' WHERE id = 5", [])
            .unwrap();
    }
    // Agreed without a write, by a cursor read.
    quiet_cursor_cycle(&f);
    assert_eq!(base_name(&f, 5), Some(text("agreed")));
    let log = support::syncline(f.path())
        .args(["log", "--json"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(!log.contains("\"unknown\""), "no entry left unknown: {log}");
    quiet_cursor_cycle(&f);
}

/// A one-way link whose left alone has a cursor, its 20 records loaded and the cursor
/// set (a first load, then a full read). `name` is the name field's options.
fn one_way_left_cursor(full_every: u32, name: &str) -> Fixture {
    let f = Fixture::new(
        SCHEMA,
        SCHEMA,
        &format!(
            r#"[links.contacts]
left = "crm.contacts"
right = "billing.contacts"

[links.contacts.fields]
id = {{ owner = "left" }}
name = {name}

[links.contacts.changes]
left = {{ cursor = "version", lookback = 0 }}
full_every = {full_every}
"#
        ),
    );
    for i in 1..=20 {
        f.left
            .execute("INSERT INTO contacts (id, name) VALUES (?1, 'n')", [i])
            .unwrap();
    }
    f.run();
    f.run();
    f
}

#[test]
fn a_side_without_a_cursor_is_read_only_by_full_reads() {
    let f = one_way_left_cursor(3, "{}");
    f.left
        .execute("UPDATE contacts SET name = 'new' WHERE id = 4", [])
        .unwrap();
    // Drift on the right: the owner's value is put back, by the next full read.
    f.right
        .execute("UPDATE contacts SET name = 'drift' WHERE id = 5", [])
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!(l.reading.contains("right not read"), "{}", l.reading);
    assert_eq!((l.right_records, l.to_right.updated), (0, 1), "{l:?}");
    assert_eq!(name_of(&f.right, 4), Some(text("new")));
    assert_eq!(name_of(&f.right, 5), Some(text("drift")));
    let mut corrected = false;
    for _ in 0..3 {
        let r = f.run();
        if r.links[0].reading.starts_with("full") {
            corrected = r.links[0].to_right.updated == 1;
            break;
        }
    }
    assert!(corrected);
    assert_eq!(name_of(&f.right, 5), Some(text("n")));
}

fn digest_fixture() -> Fixture {
    let f = Fixture::new(
        SCHEMA,
        SCHEMA,
        r#"[links.contacts]
left = "crm.contacts"
right = "billing.contacts"
mode = "two-way"
conflict = "left-wins"
on_delete = { left = "propagate", right = "propagate" }

[links.contacts.fields]
id = { owner = "left" }
name = {}

[links.contacts.changes]
reconcile = "digests"
range_size = 100
"#,
    );
    for i in 1..=1000 {
        f.left
            .execute(
                "INSERT INTO contacts (id, name) VALUES (?1, ?2)",
                rusqlite::params![i, format!("n{i}")],
            )
            .unwrap();
    }
    f
}

#[test]
fn a_digest_reconciliation_reads_only_the_ranges_that_changed_and_finds_deletes() {
    let f = digest_fixture();
    // A first load, a full read that learns the ranges, a reconciliation that learns
    // their digests: then the link is known.
    for _ in 0..3 {
        f.run();
    }
    let idle = f.run();
    let l = &idle.links[0];
    assert!(
        l.reading
            .starts_with("digests: 0 of 10 left ranges changed, 0 of 10"),
        "{}",
        l.reading
    );
    assert_eq!((l.left_records, l.right_records), (0, 0), "{l:?}");
    assert_eq!(writes(&idle), 0);

    // An edit that moves no cursor, and a delete on the other side, in two ranges.
    f.left
        .execute("UPDATE contacts SET name = 'edited' WHERE id = 250", [])
        .unwrap();
    f.left
        .execute("UPDATE contacts SET version = 0 WHERE id = 250", [])
        .unwrap();
    f.right
        .execute("DELETE FROM contacts WHERE id = 777", [])
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!(
        l.reading
            .starts_with("digests: 1 of 10 left ranges changed, 1 of 10"),
        "{}",
        l.reading
    );
    assert!(l.left_records <= 100 && l.right_records <= 100, "{l:?}");
    assert_eq!((l.to_right.updated, l.to_left.deleted), (1, 1), "{l:?}");
    assert_eq!(name_of(&f.right, 250), Some(text("edited")));
    assert_eq!(name_of(&f.left, 777), None);
    // The ranges it wrote into are read once more, to confirm; then nothing.
    let confirm = f.run();
    assert_eq!(writes(&confirm), 0, "{:?}", confirm.links[0]);
    let quiet = f.run();
    assert_eq!(
        (quiet.links[0].left_records, quiet.links[0].right_records),
        (0, 0)
    );
    assert_eq!(writes(&quiet), 0);
}

#[test]
fn a_crash_in_a_digest_reconciliation_is_followed_by_a_full_read_that_writes_nothing_twice() {
    let f = digest_fixture();
    for _ in 0..3 {
        f.run();
    }
    f.left
        .execute("UPDATE contacts SET name = 'crashed' WHERE id = 640", [])
        .unwrap();
    let out = support::syncline(f.path())
        .arg("run")
        .env("SYNCLINE_FAULT", "after_receiver_commit:1")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(name_of(&f.right, 640), Some(text("crashed")));
    let r = f.run();
    assert!(
        r.links[0].reading.contains("did not finish"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(writes(&r), 0, "the write is found made, not made again");
    // Then reconciliations again, and quiet.
    for _ in 0..2 {
        let r = f.run();
        assert_eq!(writes(&r), 0, "{:?}", r.links[0]);
    }
    assert!(
        f.run().links[0]
            .reading
            .starts_with("digests: 0 of 10 left ranges changed")
    );
}

#[test]
fn a_few_deletes_found_by_a_partial_read_are_weighed_against_the_whole_collection() {
    let f = digest_fixture();
    for _ in 0..3 {
        f.run();
    }
    // Three of a thousand, in one range: the reconciliation reads that range of the
    // left only, and nothing of the right, where the deletes go.
    f.left
        .execute("DELETE FROM contacts WHERE id IN (301, 302, 303)", [])
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert!(
        l.reading
            .starts_with("digests: 1 of 10 left ranges changed, 0 of 10"),
        "{}",
        l.reading
    );
    assert_eq!(l.refused, None, "{l:?}");
    assert_eq!(l.to_right.deleted, 3, "{l:?}");
    assert_eq!(name_of(&f.right, 302), None);
    // Half the collection is still too many, partial read or not.
    f.left
        .execute("DELETE FROM contacts WHERE id > 400", [])
        .unwrap();
    let r = f.run();
    assert!(r.links[0].refused.is_some(), "{:?}", r.links[0]);
}

/// A SQLite left read by its row version and a server right read by a timestamp the
/// server keeps, `lookback` behind.
const SERVER_LINK: &str = r#"[links.contacts]
left = "crm.contacts"
right = "billing.customers"
mode = "two-way"
conflict = "left-wins"

[links.contacts.fields]
id = { owner = "left" }
name = {}

[links.contacts.changes]
left = { cursor = "version", lookback = 0 }
right = { cursor = "updated_at", lookback = "1s" }
"#;

fn server_scenario(kind: &str, url: &str, right: &mut dyn support::sql::Sql) {
    let f = Fixture::sqlite_to_server(kind, url, SERVER_LINK);
    f.left.execute_batch(SCHEMA).unwrap();
    for i in 1..=50 {
        f.left
            .execute(
                "INSERT INTO contacts (id, name) VALUES (?1, ?2)",
                rusqlite::params![i, format!("n{i}")],
            )
            .unwrap();
    }
    for _ in 0..3 {
        f.run();
    }
    let idle = f.run();
    assert!(
        idle.links[0]
            .reading
            .contains("right changes since updated_at"),
        "{}",
        idle.links[0].reading
    );
    assert_eq!(writes(&idle), 0);

    // Past the look-back window of the load, so the cursor moves clear of its rows.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    f.left
        .execute("UPDATE contacts SET name = 'from left' WHERE id = 7", [])
        .unwrap();
    right.run_sql("UPDATE customers SET name = 'from right' WHERE id = 9");
    let r = f.run();
    let l = &r.links[0];
    assert!(l.left_records <= 2, "{l:?}");
    assert_eq!((l.to_right.updated, l.to_left.updated), (1, 1), "{l:?}");
    assert_eq!(
        right.texts("SELECT name FROM customers WHERE id = 7"),
        ["from left"]
    );
    assert_eq!(name_of(&f.left, 9), Some(text("from right")));
    // Now only the rows just changed sit inside the right's window.
    let quiet = f.run();
    let l = &quiet.links[0];
    assert_eq!(writes(&quiet), 0, "{l:?}");
    assert!(l.right_records <= 2, "{l:?}");
}

#[test]
fn a_postgresql_timestamptz_cursor_reads_what_changed() {
    let Some(url) = support::server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let db = support::TempDatabase::postgres(&url);
    let mut right = db.pg_client();
    support::sql::Sql::run_sql(
        &mut right,
        "CREATE TABLE customers (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at = clock_timestamp(); RETURN NEW; END $$;
         CREATE TRIGGER touch BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION touch();",
    );
    server_scenario("postgres", &db.url, &mut right);
}

#[test]
fn a_mariadb_datetime_cursor_reads_what_changed() {
    let Some(url) = support::server_url(
        "SYNCLINE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ) else {
        return;
    };
    let db = support::TempDatabase::mysql(&url);
    let mut right = db.mysql_conn();
    support::sql::Sql::run_sql(
        &mut right,
        "CREATE TABLE customers (id bigint PRIMARY KEY, name varchar(100),
            updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
    );
    server_scenario("mysql", &db.url, &mut right);
}

mod convergence {
    //! The guarantees under cursor reads, on random edits: after any run, a run with
    //! nobody editing writes nothing but the deletes a cursor could not see (and after a
    //! full read, nothing at all); once a full read has run, both sides hold the same
    //! records, and stay quiet.

    use super::support::{Fixture, writes};
    use proptest::prelude::*;

    /// A row version: a counter that never goes backward.
    const SCHEMA: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT, version INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0);
        CREATE TRIGGER stamp_new AFTER INSERT ON contacts BEGIN
            UPDATE counter SET n = n + 1;
            UPDATE contacts SET version = (SELECT n FROM counter) WHERE id = new.id; END;
        CREATE TRIGGER stamp_edit AFTER UPDATE OF email, name, notes ON contacts BEGIN
            UPDATE counter SET n = n + 1;
            UPDATE contacts SET version = (SELECT n FROM counter) WHERE id = new.id; END;";

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize),
        Update(usize, usize, &'static str, u8),
        Delete(usize, usize),
        Run,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0usize..2).prop_map(Op::Insert),
            5 => (0usize..2, any::<usize>(), prop::sample::select(vec!["name", "notes"]), 0u8..4)
                .prop_map(|(s, p, f, v)| Op::Update(s, p, f, v)),
            1 => (0usize..2, any::<usize>()).prop_map(|(s, p)| Op::Delete(s, p)),
            2 => Just(Op::Run),
        ]
    }

    /// Without `right_cursor`, the right is read only by reconciliations, and a cursor
    /// read of the left assumes its partners as their bases say (see `plan::streamed`).
    fn link(
        match_on: bool,
        lookback: i64,
        full_every: u32,
        digests: bool,
        right_cursor: bool,
    ) -> String {
        format!(
            r#"[links.c]
left = "crm.contacts"
right = "billing.contacts"
mode = "two-way"
conflict = "left-wins"
on_delete = {{ left = "propagate", right = "propagate" }}
delete_vs_edit = "delete-wins"
max_delete_fraction = 1.0
batch_size = 3
{}
[links.c.fields]
email = {{}}
name = {{}}
notes = {{}}

[links.c.changes]
left = {{ cursor = "version", lookback = {lookback} }}
{}
full_every = {full_every}
{}
"#,
            if match_on {
                "match_on = [\"email\"]"
            } else {
                ""
            },
            if right_cursor {
                format!("right = {{ cursor = \"version\", lookback = {lookback} }}")
            } else {
                String::new()
            },
            if digests {
                "reconcile = \"digests\"\nrange_size = 3"
            } else {
                ""
            }
        )
    }

    fn contents(conn: &rusqlite::Connection) -> Vec<String> {
        let mut rows: Vec<String> = Fixture::rows(conn, "SELECT email, name, notes FROM contacts")
            .into_iter()
            .map(|r| format!("{r:?}"))
            .collect();
        rows.sort();
        rows
    }

    fn ids(conn: &rusqlite::Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT id FROM contacts ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A run, then a run with nobody editing, which may only delete what the first did
    /// not see, and nothing at all after a full read. Without `right_cursor` a cursor
    /// run leaves the right's edits to the next reconciliation, which writes them.
    fn run_then_quiet(f: &Fixture, right_cursor: bool) -> bool {
        let first = f.run();
        let second = f.run();
        if first.links[0].refused.is_some() || second.links[0].refused.is_some() {
            // The valve held the link (both sides hold records and nothing pairs them):
            // nothing was written, so there is nothing to be quiet after.
            return false;
        }
        let l = &second.links[0];
        let reconciled = |r: &str| r.starts_with("full") || r.starts_with("digests");
        if !right_cursor && !reconciled(&first.links[0].reading) && reconciled(&l.reading) {
            return true;
        }
        let deletes = l.to_left.deleted + l.to_right.deleted;
        assert_eq!(
            writes(&second) - deletes,
            0,
            "after a run ({}), the next ({}) wrote more than deletes: {l:?}",
            first.links[0].reading,
            l.reading
        );
        if reconciled(&first.links[0].reading) {
            assert_eq!(writes(&second), 0, "after a reconciliation: {l:?}");
        }
        reconciled(&first.links[0].reading) || reconciled(&l.reading)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: super::cases(), ..ProptestConfig::default() })]

        #[test]
        fn cursor_cycles_converge_and_go_quiet(
            match_on in any::<bool>(),
            lookback in 0i64..3,
            full_every in 1u32..5,
            digests in any::<bool>(),
            right_cursor in any::<bool>(),
            ops in prop::collection::vec(op(), 1..25),
        ) {
            let f = Fixture::new(
                SCHEMA,
                SCHEMA,
                &link(match_on, lookback, full_every, digests, right_cursor),
            );
            let mut email = 0;
            for op in ops {
                let conn = |s: usize| if s == 0 { &f.left } else { &f.right };
                match op {
                    Op::Insert(s) => {
                        email += 1;
                        conn(s)
                            .execute(
                                "INSERT INTO contacts (email, name, notes) VALUES (?1, 'n', 'o')",
                                [format!("e{email}@x")],
                            )
                            .unwrap();
                    }
                    Op::Update(s, pick, field, v) => {
                        let ids = ids(conn(s));
                        if !ids.is_empty() {
                            conn(s)
                                .execute(
                                    &format!("UPDATE contacts SET {field} = ?1 WHERE id = ?2"),
                                    rusqlite::params![format!("{field}{v}"), ids[pick % ids.len()]],
                                )
                                .unwrap();
                        }
                    }
                    Op::Delete(s, pick) => {
                        let ids = ids(conn(s));
                        if !ids.is_empty() {
                            conn(s)
                                .execute("DELETE FROM contacts WHERE id = ?1", [ids[pick % ids.len()]])
                                .unwrap();
                        }
                    }
                    Op::Run => {
                        run_then_quiet(&f, right_cursor);
                    }
                }
            }
            // Settle: until a reconciliation has run, then once more. (Digests may need
            // a full read and a reconciliation to learn their ranges first.)
            let mut full = false;
            for _ in 0..=full_every + 3 {
                full |= run_then_quiet(&f, right_cursor);
                if full {
                    break;
                }
            }
            // Without match_on, records made on both sides before any run are refused by
            // the valve, by design: nothing to converge.
            prop_assume!(f.run().links[0].refused.is_none());
            prop_assert!(full, "no full read within full_every cycles");
            run_then_quiet(&f, right_cursor);
            prop_assert_eq!(contents(&f.left), contents(&f.right));
            prop_assert_eq!(writes(&f.run()), 0);
        }
    }
}

/// `PROPTEST_CASES`, or 64.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

/// Composite keys: ranges are bounded by rows of the key's columns, on every SQL kind.
#[test]
fn digests_and_range_scans_over_a_composite_key_on_every_sql_kind() {
    use support::sql::Sql;
    use syncline::connectors::{KeyRange, ReadSpec};
    use syncline::model::Key;
    let key = |a: i64, b: i64| Key(vec![Value::Integer(a), Value::Integer(b)]);
    let check = |label: &str,
                 connector: &mut Box<dyn syncline::connectors::Connector>,
                 edit: &mut dyn FnMut()| {
        let spec = ReadSpec {
            collection: "t".into(),
            key: vec!["a".into(), "b".into()],
            columns: vec!["v".into()],
            since: None,
            range: None,
        };
        let bounds = [key(1, 5), key(2, 3)];
        let before = connector.digests(&spec, &bounds).unwrap();
        // (1,1)…(1,9) and (2,1)…(2,9): below (1,5) four, up to (2,3) seven, the rest seven.
        assert_eq!(
            before.iter().map(|d| d.rows).collect::<Vec<_>>(),
            [4, 7, 7],
            "{label}"
        );
        edit();
        let after = connector.digests(&spec, &bounds).unwrap();
        assert_eq!(
            (
                after[0] == before[0],
                after[1] == before[1],
                after[2] == before[2]
            ),
            (true, false, true),
            "{label}"
        );
        let mut ranged = spec.clone();
        ranged.range = Some(KeyRange {
            from: Some(key(1, 5)),
            to: Some(key(2, 3)),
        });
        let mut keys = Vec::new();
        connector
            .scan(&ranged, 100, &mut |records| {
                keys.extend(records.into_iter().map(|r| r.key.display_text()));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            keys,
            ["1,5", "1,6", "1,7", "1,8", "1,9", "2,1", "2,2"],
            "{label}"
        );
    };
    let rows: String = (1..=2)
        .flat_map(|a| (1..=9).map(move |b| format!("({a}, {b}, 'v')")))
        .collect::<Vec<_>>()
        .join(", ");
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut c = rusqlite::Connection::open(&path).unwrap();
        c.run_sql(&format!("CREATE TABLE t (a INTEGER, b INTEGER, v TEXT, PRIMARY KEY (a, b)); INSERT INTO t VALUES {rows}"));
        let mut connector = syncline::connectors::open(
            "t",
            &syncline::config::SystemSpec::Sqlite(syncline::connectors::sqlite::Settings { path }),
        )
        .unwrap();
        check("sqlite", &mut connector, &mut || {
            c.run_sql("UPDATE t SET v = 'w' WHERE a = 1 AND b = 7")
        });
    }
    if let Some(url) = support::server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) {
        let db = support::TempDatabase::postgres(&url);
        let mut c = db.pg_client();
        c.run_sql(&format!("CREATE TABLE t (a bigint, b bigint, v text, PRIMARY KEY (a, b)); INSERT INTO t VALUES {rows}"));
        let mut connector = syncline::connectors::open(
            "t",
            &syncline::config::SystemSpec::Postgres(syncline::connectors::postgres::Settings {
                url: syncline::config::Secret::new(db.url.clone()),
            }),
        )
        .unwrap();
        check("postgres", &mut connector, &mut || {
            c.run_sql("UPDATE t SET v = 'w' WHERE a = 1 AND b = 7")
        });
    }
    if let Some(url) = support::server_url(
        "SYNCLINE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ) {
        let db = support::TempDatabase::mysql(&url);
        let mut c = db.mysql_conn();
        c.run_sql(&format!("CREATE TABLE t (a bigint, b bigint, v varchar(10), PRIMARY KEY (a, b)); INSERT INTO t VALUES {rows}"));
        let mut connector = syncline::connectors::open(
            "t",
            &syncline::config::SystemSpec::Mysql(syncline::connectors::mysql::Settings {
                url: syncline::config::Secret::new(db.url.clone()),
            }),
        )
        .unwrap();
        check("mariadb", &mut connector, &mut || {
            c.run_sql("UPDATE t SET v = 'w' WHERE a = 1 AND b = 7")
        });
    }
}

#[test]
fn a_side_with_text_keys_says_why_it_is_reconciled_in_full() {
    let f = Fixture::new(
        "CREATE TABLE contacts (code TEXT PRIMARY KEY, name TEXT);",
        "CREATE TABLE contacts (code TEXT PRIMARY KEY, name TEXT);",
        r#"[links.contacts]
left = "crm.contacts"
right = "billing.contacts"
left_key = "code"
right_key = "code"

[links.contacts.fields]
code = {}
name = {}

[links.contacts.changes]
reconcile = "digests"
range_size = 10
"#,
    );
    for i in 0..50 {
        f.left
            .execute(
                "INSERT INTO contacts VALUES (?1, 'n')",
                [format!("c{i:03}")],
            )
            .unwrap();
    }
    f.run();
    f.run();
    let r = f.run();
    assert!(
        r.links[0]
            .reading
            .contains("keys are not integers or uuids"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(writes(&r), 0);
    // Read in full, an edit anywhere is found.
    f.left
        .execute(
            "UPDATE contacts SET name = 'edited' WHERE code = 'c007'",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.updated, 1, "{:?}", r.links[0]);
}

#[test]
fn a_cursor_moved_to_another_column_starts_over_with_a_full_read() {
    let f = fixture(0, 100);
    settle(&f);
    // The same link, its cursors now on `id` (an ever-growing key would do as one).
    f.write_config(&link(0, 100, "").replace("cursor = \"version\"", "cursor = \"id\""));
    let r = f.run();
    assert!(
        r.links[0].reading.contains("cursor is a new column, `id`"),
        "{}",
        r.links[0].reading
    );
    let next = f.run();
    assert!(
        next.links[0].reading.contains("changes since id >= "),
        "{}",
        next.links[0].reading
    );
    assert_eq!(writes(&next), 0);
}

/// A field added to a link reaches records that did not change since: cursor and digest
/// cycles do not read those, so the cycle after the config changed reads in full.
#[test]
fn a_field_added_to_the_link_reaches_records_that_did_not_change() {
    let with_email = |sql: &str| sql.replace("name TEXT,", "name TEXT, email TEXT,");
    let f = Fixture::new(&with_email(SCHEMA), &with_email(SCHEMA), &link(0, 100, ""));
    for i in 1..=20 {
        f.left
            .execute(
                "INSERT INTO contacts (id, name, email) VALUES (?1, ?2, ?3)",
                rusqlite::params![i, format!("n{i}"), format!("p{i}@example.com")],
            )
            .unwrap();
    }
    settle(&f);
    let email_of = |id: i64| {
        Fixture::rows(
            &f.right,
            &format!("SELECT email FROM contacts WHERE id = {id}"),
        )
        .remove(0)
        .remove(0)
    };
    assert_eq!(email_of(7), Value::Null, "not synced yet");
    f.write_config(&link(0, 100, "").replace("name = {}", "name = {}\nemail = {}"));
    let r = f.run();
    assert!(
        r.links[0].reading.contains("fields changed"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(r.links[0].to_right.updated, 20, "{:?}", r.links[0]);
    assert_eq!(email_of(7), text("p7@example.com"));
    let next = f.run();
    assert!(
        next.links[0].reading.contains("changes since"),
        "{}",
        next.links[0].reading
    );
    assert_eq!(writes(&next), 0);
}

/// A name field whose values are trimmed: a transform between the sides, so a cursor
/// read fetches each changed record's partner instead of assuming it.
const TRIMMED: &str = r#"{ transform = "trim" }"#;

/// Sets the name of left records 4, 5 and 6 to `value`, in that order (so the cursor's
/// new position is past record 4's).
fn edit_left_456(f: &Fixture, value: &str) {
    for id in [4, 5, 6] {
        f.left
            .execute(
                "UPDATE contacts SET name = ?2 WHERE id = ?1",
                rusqlite::params![id, value],
            )
            .unwrap();
    }
}

/// A run during which right record 4's name becomes `name`, between the plan and the
/// first write, as a person's edit would.
fn run_while_right_4_becomes(f: &Fixture, name: &str) -> syncline::engine::RunReport {
    let right = f.path().join("right.db");
    let mut edit = |_: &str| {
        rusqlite::Connection::open(&right)
            .unwrap()
            .execute("UPDATE contacts SET name = ?1 WHERE id = 4", [name])
            .unwrap();
    };
    f.run_with(syncline::engine::RunOptions {
        between_plan_and_apply: Some(&mut edit),
        ..Default::default()
    })
}

/// A write found stale in a cycle that reads by cursor (someone edited the record on
/// the receiving side between the read and the write) is not forgotten once the cursor
/// has moved past its record: the next cycle, with nobody editing, writes it.
#[test]
fn a_write_found_stale_in_a_cursor_cycle_is_made_by_the_next_cycle() {
    // Trimmed: partners are fetched, not assumed (see the test after the next).
    let f = one_way_left_cursor(100, TRIMMED);
    edit_left_456(&f, "new");
    let r = run_while_right_4_becomes(&f, "edited");
    let l = &r.links[0];
    assert!(l.reading.contains("changes since"), "{}", l.reading);
    assert_eq!(l.to_right.stale_skipped, 1, "{l:?}");
    assert_eq!(name_of(&f.right, 4), Some(text("edited")));
    // The left owns the field: the next cycle puts its value back, then goes quiet.
    let r = f.run();
    assert_eq!(r.links[0].to_right.updated, 1, "{:?}", r.links[0]);
    assert_eq!(name_of(&f.right, 4), Some(text("new")));
    quiet_cursor_cycle(&f);
}

/// A record edited on the receiving side every time a cycle writes it (a busy row) does
/// not hold the cursor for good: positions are kept after one cycle with a stale write,
/// not after two in a row; the record then waits for the next reconciliation, and the
/// cycles in between read only what changed.
#[test]
fn a_write_stale_twice_in_a_row_waits_for_the_next_reconciliation() {
    let f = one_way_left_cursor(6, TRIMMED);
    let stale_cycle = |f: &Fixture, value: &str| {
        edit_left_456(f, value);
        let r = run_while_right_4_becomes(f, &format!("busy {value}"));
        assert_eq!(r.links[0].to_right.stale_skipped, 1, "{:?}", r.links[0]);
        r
    };
    stale_cycle(&f, "first");
    // The positions were kept: this cycle reads the three records again (and 4 is
    // written stale again, as the busy row is edited again).
    let again = stale_cycle(&f, "second");
    assert!(again.links[0].left_records >= 3, "{:?}", again.links[0]);
    // Not kept twice: the next cycle reads only the record at the position.
    let r = f.run();
    assert!(
        r.links[0].reading.contains("changes since"),
        "{}",
        r.links[0].reading
    );
    assert_eq!(r.links[0].left_records, 1, "{:?}", r.links[0]);
    assert_eq!(name_of(&f.right, 4), Some(text("busy second")));
    // The reconciliation puts the owner's value back.
    let reconciled = (0..6).any(|_| f.run().links[0].reading.starts_with("full"));
    assert!(reconciled);
    assert_eq!(name_of(&f.right, 4), Some(text("second")));
}

/// A cursor read assumes the right partners of what changed as their bases say they are
/// (a SQLite right makes its writes conditional on the values read) and fetches none;
/// a write whose record turns out otherwise — edited on the right between the read and
/// the write — is decided again in the same cycle from both records as they are, so
/// the owner's value lands now, nothing is counted stale, and the next cycle is quiet.
#[test]
fn a_cursor_read_assumes_partners_and_decides_again_those_that_differ() {
    let f = one_way_left_cursor(100, "{}");
    edit_left_456(&f, "first");
    let r = f.run();
    let l = &r.links[0];
    assert!(l.reading.contains("changes since"), "{}", l.reading);
    assert_eq!((l.to_right.updated, l.partners_fetched), (3, 0), "{l:?}");
    assert_eq!(name_of(&f.right, 5), Some(text("first")));

    edit_left_456(&f, "second");
    let r = run_while_right_4_becomes(&f, "edited");
    let l = &r.links[0];
    assert_eq!(
        (
            l.to_right.updated,
            l.to_right.stale_skipped,
            l.partners_fetched
        ),
        (3, 0, 1),
        "{l:?}"
    );
    for id in [4, 5, 6] {
        assert_eq!(name_of(&f.right, id), Some(text("second")), "record {id}");
    }
    quiet_cursor_cycle(&f);
}
