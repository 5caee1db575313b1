//! Systems that rewrite what they are given, against SQLite, PostgreSQL and MariaDB: a
//! trigger that re-cases differently on each side, a column default filled on create,
//! columns that round (`timestamp(0)`, `datetime(0)`, SQLite's NUMERIC affinity).
//!
//! One scenario for every kind: syncline must remember what each system stored, so that
//! after any run, with nobody editing, the next run writes nothing; and what a receiver
//! filled in a field it owns flows back in the same run, not the next.

mod support;

use support::sql::Sql;
use support::{Fixture, TempDatabase, server_url, writes};

/// The link every kind runs: `name` owned by both (each side's trigger re-cases it its
/// own way), `status` owned by the right (its default fills it on create), `at` owned by
/// the left (the right's column rounds it), `amount` owned by the left.
const LINK: &str = "[links.c]
left = \"crm.a\"
right = \"billing.b\"
mode = \"two-way\"
conflict = \"left-wins\"
on_delete = { left = \"propagate\", right = \"ignore\" }

[links.c.fields]
id = { owner = \"left\" }
name = { owner = \"both\" }
status = { owner = \"right\" }
at = { owner = \"left\" }
amount = { owner = \"left\" }
";

/// The scenario, for any pair of databases holding tables `a` (left) and `b` (right).
/// `at` is the left's value with a fraction of a second the right's column does not keep.
fn scenario(f: &Fixture, left: &mut dyn Sql, right: &mut dyn Sql, fractional: &str) {
    left.run_sql(&format!(
        "INSERT INTO a (id, name, status, at, amount) VALUES (1, 'Ada', NULL, '2026-01-01 10:00:00{fractional}', '12.50');
         INSERT INTO a (id, name, status, at, amount) VALUES (2, 'Bob', NULL, '2026-01-02 10:00:00', '3')"
    ));
    // WHEN the first run creates both records on the right, which upper-cases the names,
    // fills `status` by its default and rounds `at`
    let first = f.run();
    let l = &first.links[0];
    assert_eq!((l.to_right.created, l.to_right.rejected), (2, 0), "{l:?}");
    // THEN the status the right filled is on the left after this same run
    assert_eq!(
        right.texts("SELECT name FROM b ORDER BY id"),
        ["ADA", "BOB"]
    );
    assert_eq!(
        left.texts("SELECT status FROM a ORDER BY id"),
        ["active", "active"],
        "the default the right filled flows back in the run that created the record"
    );
    assert_eq!(l.to_left.updated, 2, "{l:?}");
    // AND the next runs write nothing: each side's rewrite is remembered as its own
    for n in 2..=3 {
        let r = f.run();
        assert_eq!(writes(&r), 0, "run {n} wrote: {:?}", r.links[0].planned);
    }

    // WHEN the left renames (its trigger lower-cases on update)
    left.run_sql("UPDATE a SET name = 'Grace Hopper' WHERE id = 1");
    assert_eq!(
        left.texts("SELECT name FROM a WHERE id = 1"),
        ["grace hopper"]
    );
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.updated, r.links[0].to_left.updated),
        (1, 0)
    );
    assert_eq!(
        right.texts("SELECT name FROM b WHERE id = 1"),
        ["GRACE HOPPER"]
    );
    assert_eq!(writes(&f.run()), 0, "an upper-cased echo is not news");

    // WHEN the right renames (its trigger upper-cases)
    right.run_sql("UPDATE b SET name = 'Bobby' WHERE id = 2");
    let r = f.run();
    assert_eq!(
        (r.links[0].to_left.updated, r.links[0].to_right.updated),
        (1, 0)
    );
    assert_eq!(left.texts("SELECT name FROM a WHERE id = 2"), ["bobby"]);
    assert_eq!(writes(&f.run()), 0, "a lower-cased echo is not news");

    // WHEN the left moves `at` by a fraction the right rounds away, and the right's
    // billing team sets a status
    left.run_sql(&format!(
        "UPDATE a SET at = '2026-03-03 09:00:00{fractional}' WHERE id = 2"
    ));
    right.run_sql("UPDATE b SET status = 'paused' WHERE id = 1");
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.updated, r.links[0].to_left.updated),
        (1, 1)
    );
    assert_eq!(
        left.texts("SELECT status FROM a ORDER BY id"),
        ["paused", "active"]
    );
    // THEN, nobody editing, nothing is written again, ever
    for _ in 0..3 {
        let r = f.run();
        assert_eq!(writes(&r), 0, "{:?}", r.links[0].planned);
        assert_eq!((r.links[0].conflicts, r.links[0].quarantined), (0, 0));
    }
}

#[test]
fn sqlite_systems_that_rewrite_converge_in_one_run() {
    let f = Fixture::new(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT, status TEXT, at TEXT, amount TEXT);
         CREATE TRIGGER a_lower AFTER UPDATE OF name ON a WHEN new.name <> lower(new.name)
           BEGIN UPDATE a SET name = lower(new.name) WHERE id = new.id; END;",
        // NUMERIC affinity stores '12.50' as 12.5; the trigger trims `at` to the second.
        "CREATE TABLE b (id INTEGER PRIMARY KEY, name TEXT, status TEXT NOT NULL DEFAULT 'active', at TEXT, amount NUMERIC);
         CREATE TRIGGER b_upper_insert AFTER INSERT ON b
           BEGIN UPDATE b SET name = upper(new.name), at = substr(new.at, 1, 19) WHERE id = new.id; END;
         CREATE TRIGGER b_upper_update AFTER UPDATE OF name, at ON b
           WHEN new.name <> upper(new.name) OR length(new.at) > 19
           BEGIN UPDATE b SET name = upper(new.name), at = substr(new.at, 1, 19) WHERE id = new.id; END;",
        LINK,
    );
    let mut left = rusqlite::Connection::open(f.path().join("left.db")).unwrap();
    let mut right = rusqlite::Connection::open(f.path().join("right.db")).unwrap();
    scenario(&f, &mut left, &mut right, ".5");
    assert_eq!(right.texts("SELECT amount FROM b WHERE id = 1"), ["12.5"]);
    assert_eq!(
        right.texts("SELECT at FROM b WHERE id = 2"),
        ["2026-03-03 09:00:00"]
    );
}

#[test]
fn postgres_systems_that_rewrite_converge_in_one_run() {
    let Some(url) = server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let db = TempDatabase::postgres(&url);
    let mut c = db.pg_client();
    c.run_sql(
        "CREATE TABLE a (id bigint PRIMARY KEY, name text, status text, at timestamp, amount numeric);
         CREATE FUNCTION lower_name() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.name := lower(NEW.name); RETURN NEW; END $$;
         CREATE TRIGGER a_lower BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION lower_name();
         CREATE TABLE b (id bigint PRIMARY KEY, name text, status text NOT NULL DEFAULT 'active',
           at timestamp(0), amount numeric(12,2));
         CREATE FUNCTION upper_name() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
         CREATE TRIGGER b_upper BEFORE INSERT OR UPDATE ON b FOR EACH ROW EXECUTE FUNCTION upper_name();",
    );
    let f = Fixture::new("", "", "");
    std::fs::write(
        f.config_path(),
        format!(
            "[systems.crm]\nkind = \"postgres\"\nurl = \"{0}\"\n[systems.billing]\nkind = \"postgres\"\nurl = \"{0}\"\n{LINK}",
            db.url
        ),
    )
    .unwrap();
    let mut right = db.pg_client();
    scenario(&f, &mut c, &mut right, ".6");
    // timestamp(0) rounded the half second up.
    assert_eq!(
        right.texts("SELECT at FROM b WHERE id = 2"),
        ["2026-03-03 09:00:01"]
    );
    assert_eq!(
        c.texts("SELECT at FROM a WHERE id = 2"),
        ["2026-03-03 09:00:00.6"]
    );
}

#[test]
fn mariadb_systems_that_rewrite_converge_in_one_run() {
    let Some(url) = server_url(
        "SYNCLINE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ) else {
        return;
    };
    let db = TempDatabase::mysql(&url);
    let mut c = db.mysql_conn();
    for sql in [
        "CREATE TABLE a (id bigint PRIMARY KEY, name varchar(100), status varchar(20), at datetime(6), amount decimal(12,3))",
        "CREATE TRIGGER a_lower BEFORE UPDATE ON a FOR EACH ROW SET NEW.name = lower(NEW.name)",
        "CREATE TABLE b (id bigint PRIMARY KEY, name varchar(100), status varchar(20) NOT NULL DEFAULT 'active',
           at datetime(0), amount decimal(12,2))",
        "CREATE TRIGGER b_upper_insert BEFORE INSERT ON b FOR EACH ROW SET NEW.name = upper(NEW.name)",
        "CREATE TRIGGER b_upper_update BEFORE UPDATE ON b FOR EACH ROW SET NEW.name = upper(NEW.name)",
    ] {
        c.run_sql(sql);
    }
    let f = Fixture::new("", "", "");
    std::fs::write(
        f.config_path(),
        format!(
            "[systems.crm]\nkind = \"mysql\"\nurl = \"{0}\"\n[systems.billing]\nkind = \"mysql\"\nurl = \"{0}\"\n{LINK}",
            db.url
        ),
    )
    .unwrap();
    let mut right = db.mysql_conn();
    scenario(&f, &mut c, &mut right, ".6");
    // datetime(0) cut the fraction away (MariaDB truncates).
    assert_eq!(
        right.texts("SELECT CAST(at AS CHAR) FROM b WHERE id = 2"),
        ["2026-03-03 09:00:00"]
    );
    assert_eq!(
        c.texts("SELECT CAST(at AS CHAR) FROM a WHERE id = 2"),
        ["2026-03-03 09:00:00.600000"]
    );
}
