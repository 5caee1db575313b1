//! The `postgres` connector against the real PostgreSQL server (`SYNCLINE_TEST_PG_URL`,
//! e.g. `postgres://root@127.0.0.1:5432/test`). Each test makes and drops its own database.

mod support;

use support::{Fixture, TempDatabase, server_url, writes};
use syncline::engine::RunOptions;

const PG_EXAMPLE: &str = "postgres://root@127.0.0.1:5432/test";

fn pg() -> Option<TempDatabase> {
    server_url("SYNCLINE_TEST_PG_URL", PG_EXAMPLE).map(|u| TempDatabase::postgres(&u))
}

/// A fixture whose systems are `crm` and `billing` on the given kinds.
fn fixture(systems: &str, links: &str) -> Fixture {
    let f = Fixture::new("", "", "");
    std::fs::write(f.config_path(), format!("{systems}\n{links}")).unwrap();
    f
}

/// `crm` and `billing`, both in the test's PostgreSQL database.
fn both_in_postgres(db: &TempDatabase) -> String {
    format!(
        "[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"\n[systems.billing]\nkind = \"postgres\"\nurl = \"{}\"\n",
        db.url, db.url
    )
}

/// Table `b`'s notes, by id.
fn notes_of_b(c: &mut postgres::Client) -> Vec<String> {
    c.query("SELECT note FROM b ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

const ALL_TYPES: &str = "id bigint PRIMARY KEY, i int, s smallint, n numeric(12,2), big numeric, f float8, t text, v varchar(20),
    b bool, d date, ts timestamp, tz timestamptz, j jsonb, js json, u uuid, by bytea, m mood, ch char(4)";

const TYPE_FIELDS: &str = "i = {}\ns = {}\nn = {}\nbig = {}\nf = {}\nt = {}\nv = {}\nb = {}\nd = {}\nts = {}\ntz = {}\nj = {}\njs = {}\nu = {}\nby = {}\nm = {}\nch = {}";

#[test]
fn every_type_round_trips_postgres_to_postgres_and_a_second_run_writes_nothing() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute(&format!(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE src ({ALL_TYPES});
         CREATE SCHEMA billing;
         CREATE TABLE billing.dst ({ALL_TYPES});
         INSERT INTO src VALUES
           (1, -2147483648, 32767, 1234567890.12, 123456789012345678901234567890.000000000000000001, 0.1,
            'ünïcödé ''quoted'' \\ back', 'short', true, '2026-02-28', '2026-11-26 10:00:00.123456',
            '2026-11-26 10:00:00.5+02', '{{\"a\": [1, 2.5, null], \"b\": {{\"c\": \"d\"}}}}', '[1, 2,  3]',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', 'happy', 'ab'),
           (2, NULL, NULL, -0.01, NULL, 'NaN', '', NULL, false, '0001-01-01', NULL, '1970-01-01 00:00:00+00',
            'null', NULL, NULL, '\\x', 'sad', NULL),
           (3, 0, 0, 0, 1e-20, 1e300, E'tab\\tnew\\nline\\rcr\\\\back\\x01\\bbell', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'abcd'),
           (4, 2147483647, -32768, -9999999999.99, -0.000000000000000000001, -1e-300, 'x', 'y', true, '1999-12-31',
            '1999-12-31 23:59:59.999999', '1969-07-20 20:17:40.000001+00', '{{}}', '{{}}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12',
            '\\x', 'ok', 'abc'),
           (5, NULL, NULL, 10000.00, 100000000, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (6, NULL, NULL, 0.10, 12345.6789012345678900, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);"
    ))
    .unwrap();
    let f = fixture(
        &both_in_postgres(&db),
        &format!(
            "[links.t]\nleft = \"crm.src\"\nright = \"billing.billing.dst\"\nleft_key = \"id\"\nright_key = \"id\"\non_delete = {{ left = \"propagate\" }}\n[links.t.fields]\nid = {{}}\n{TYPE_FIELDS}\n"
        ),
    );
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 6, "{:?}", r.links[0]);
    assert_eq!(r.links[0].to_right.rejected, 0);
    // Every column, as PostgreSQL prints it, is identical on both sides; `json` as the
    // same document (its spacing is not kept: values are JSON documents, see README).
    let dump = |table: &str, c: &mut postgres::Client| -> Vec<String> {
        c.query(
            &format!("SELECT (id, i, s, n, big, f, t, v, b, d, ts, tz, j, js::jsonb, u, by, m, ch)::text FROM {table} ORDER BY id"),
            &[],
        )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(dump("src", &mut c), dump("billing.dst", &mut c));
    assert_eq!(writes(&f.run()), 0, "a second run must write nothing");
    // An update of every type flows too, and then goes quiet.
    c.batch_execute("UPDATE src SET n = n + 0.01, tz = tz + interval '1 microsecond', j = '{\"z\": 1}', m = 'ok', by = '\\x01', ch = 'zz' WHERE id = 1").unwrap();
    assert_eq!(f.run().links[0].to_right.updated, 1);
    assert_eq!(dump("src", &mut c), dump("billing.dst", &mut c));
    assert_eq!(writes(&f.run()), 0);
}

/// Text from SQLite into typed PostgreSQL columns: creates whose values are not already of
/// the column's type go as `COPY` text, where PostgreSQL casts them; exact all the same.
#[test]
fn sqlite_text_fills_typed_postgres_columns_exactly() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute(
        "SET TimeZone = 'UTC';
         CREATE TABLE orders (id bigint PRIMARY KEY, placed date, at timestamptz, total numeric(12,2), ref uuid, note varchar(10));",
    )
    .unwrap();
    let f = fixture(
        &format!(
            "[systems.shop]\nkind = \"sqlite\"\npath = \"shop.db\"\n[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"\n",
            db.url
        ),
        "[links.o]\nleft = \"shop.orders\"\nright = \"crm.orders\"\n[links.o.fields]\nid = {}\nplaced = {}\nat = {}\ntotal = {}\nref = {}\nnote = {}\n",
    );
    let shop = rusqlite::Connection::open(f.path().join("shop.db")).unwrap();
    shop.execute_batch(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, placed TEXT, at TEXT, total TEXT, ref TEXT, note TEXT);
         INSERT INTO orders VALUES
           (1, '2026-02-28', '2026-11-26T10:00:00.25Z', '12.5', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'plain'),
           (2, '1999-12-31', '1999-12-31 23:00:00+01:00', '-0.01', 'a0eebc999c0b4ef8bb6d6bb9bd380a12', '');",
    )
    .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 2, "{:?}", r.links[0]);
    let rows: Vec<String> = c
        .query("SELECT o::text FROM orders o ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        [
            "(1,2026-02-28,\"2026-11-26 10:00:00.25+00\",12.50,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,plain)",
            "(2,1999-12-31,\"1999-12-31 22:00:00+00\",-0.01,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12,\"\")",
        ]
    );
    assert_eq!(writes(&f.run()), 0, "a second run must write nothing");
}

#[test]
fn postgres_and_sqlite_two_way_keep_numeric_exact() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute(
        "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text, amount numeric(12,2), status text, seen timestamptz);
         INSERT INTO contacts (email, name, amount, status, seen) VALUES
           ('a@x.org', 'Ann', 12.50, 'active', '2026-11-26 10:00:00+00'), ('b@x.org', 'Bob', 0.10, 'trial', NULL);",
    )
    .unwrap();
    let f = fixture(
        &format!(
            "[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"billing.db\"\n",
            db.url
        ),
        "[links.c]\nleft = \"crm.contacts\"\nright = \"billing.customers\"\nleft_key = \"id\"\nright_key = \"cid\"\nmode = \"two-way\"\nmatch_on = [\"email\"]\nright_ref = \"crm_id\"\non_delete = { left = \"propagate\", right = \"propagate\" }\n[links.c.fields]\nemail = { owner = \"left\" }\nname = { owner = \"left\" }\namount = { owner = \"left\" }\nseen = { owner = \"left\" }\nstatus = { owner = \"right\" }\n",
    );
    let sqlite = rusqlite::Connection::open(f.path().join("billing.db")).unwrap();
    sqlite
        .execute_batch(
            "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, amount TEXT, status TEXT, seen TEXT, crm_id TEXT);
             INSERT INTO customers (email, status) VALUES ('b@x.org', 'past_due'), ('c@x.org', 'trial');",
        )
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert_eq!((l.to_right.created, l.to_left.created), (1, 1), "{l:?}");
    // numeric(12,2) arrives as its exact text, never a float
    let amounts: Vec<(String, Option<String>)> = sqlite
        .prepare("SELECT email, amount FROM customers ORDER BY email")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        amounts[0],
        ("a@x.org".to_string(), Some("12.50".to_string()))
    );
    assert_eq!(
        amounts[1],
        ("b@x.org".to_string(), Some("0.10".to_string()))
    );
    // the write-back field flows to PostgreSQL
    let status: String = c
        .query_one("SELECT status FROM contacts WHERE email = 'b@x.org'", &[])
        .unwrap()
        .get(0);
    assert_eq!(status, "past_due");
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_bulk_create_with_one_refused_record_lands_the_rest_and_quarantines_that_one() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute("CREATE TABLE people (id bigint PRIMARY KEY, code varchar(3), note text)")
        .unwrap();
    let f = fixture(
        &format!(
            "[systems.crm]\nkind = \"sqlite\"\npath = \"crm.db\"\n[systems.billing]\nkind = \"postgres\"\nurl = \"{}\"\n",
            db.url
        ),
        "[links.p]\nleft = \"crm.people\"\nright = \"billing.people\"\n[links.p.fields]\nid = {}\ncode = {}\nnote = {}\n",
    );
    let sqlite = rusqlite::Connection::open(f.path().join("crm.db")).unwrap();
    // Text that COPY's text format must escape, and one code too long for varchar(3).
    sqlite
        .execute_batch(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, code TEXT, note TEXT);
             INSERT INTO people VALUES (1, 'abc', 'tab	and' || char(10) || 'newline' || char(13) || ' \\N back\\');
             INSERT INTO people VALUES (2, 'toolong', 'refused');
             INSERT INTO people VALUES (3, NULL, '\\.');",
        )
        .unwrap();
    let r = f.run();
    let l = &r.links[0];
    assert_eq!((l.to_right.created, l.to_right.rejected), (2, 1), "{l:?}");
    let rows: Vec<(i64, Option<String>, Option<String>)> = c
        .query("SELECT id, code, note FROM people ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                1,
                Some("abc".into()),
                Some("tab\tand\nnewline\r \\N back\\".into())
            ),
            (3, None, Some("\\.".into())),
        ]
    );
    let quarantined = f.store().quarantine(Some("p")).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].reason.contains("too long"),
        "{quarantined:?}"
    );
    // The two that landed are linked: a second run writes nothing for them.
    assert_eq!(f.run().links[0].to_right.created, 0);
}

#[test]
fn a_concurrent_update_between_read_and_write_is_not_overwritten() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, note text); CREATE TABLE b (id int PRIMARY KEY, note text);
         INSERT INTO a VALUES (1, 'one'), (2, 'two');",
    )
    .unwrap();
    let f = fixture(
        &both_in_postgres(&db),
        "[links.n]\nleft = \"crm.a\"\nright = \"billing.b\"\nmode = \"two-way\"\nmatch_on = [\"id\"]\nconflict = \"left-wins\"\n[links.n.fields]\nid = { owner = \"left\" }\nnote = { owner = \"both\" }\n",
    );
    f.run();
    // Two updates to the right: they go in one statement, which must skip row 1 alone.
    c.batch_execute("UPDATE a SET note = 'left edit' WHERE id IN (1, 2)")
        .unwrap();
    let url = db.url.clone();
    let mut hook = |_: &str| {
        let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        other
            .batch_execute("UPDATE b SET note = 'typed meanwhile' WHERE id = 1")
            .unwrap();
    };
    let r = f.run_with(RunOptions {
        between_plan_and_apply: Some(&mut hook),
        ..Default::default()
    });
    assert_eq!(r.links[0].to_right.stale_skipped, 1);
    assert_eq!(r.links[0].to_right.updated, 1);
    let notes = notes_of_b(&mut c);
    assert_eq!(notes, ["typed meanwhile", "left edit"]);
    // The next run sees both edits, and the left wins as configured.
    f.run();
    let note: String = c
        .query_one("SELECT note FROM b WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(note, "left edit");
}

#[test]
fn updates_sent_together_with_one_refused_land_the_rest_and_quarantine_that_one() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, note text);
         CREATE TABLE b (id int PRIMARY KEY, note text CHECK (length(note) < 10));
         INSERT INTO a SELECT g, 'n' || g FROM generate_series(1, 5) g;",
    )
    .unwrap();
    let f = fixture(
        &both_in_postgres(&db),
        "[links.n]\nleft = \"crm.a\"\nright = \"billing.b\"\n[links.n.fields]\nid = {}\nnote = {}\n",
    );
    assert_eq!(f.run().links[0].to_right.created, 5);
    c.batch_execute(
        "UPDATE a SET note = 'edited' || id; UPDATE a SET note = 'far too long for b' WHERE id = 3",
    )
    .unwrap();
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.updated, r.links[0].to_right.rejected),
        (4, 1)
    );
    let notes = notes_of_b(&mut c);
    assert_eq!(notes, ["edited1", "edited2", "n3", "edited4", "edited5"]);
}

#[test]
fn a_connection_killed_before_a_batch_is_retried_without_a_partial_batch() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, note text); CREATE TABLE b (id int PRIMARY KEY, note text NOT NULL);
         INSERT INTO a SELECT g, 'n' || g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    let f = fixture(
        &both_in_postgres(&db),
        "[links.n]\nleft = \"crm.a\"\nright = \"billing.b\"\nbatch_size = 100\n[links.n.fields]\nid = {}\nnote = {}\n",
    );
    // The writer's connection dies after the plan, before the first batch.
    let url = db.url.clone();
    let mut hook = |_: &str| {
        let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let killed: i64 = other
            .query_one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'syncline:billing' AND datname = current_database()", &[])
            .unwrap()
            .get(0);
        assert_eq!(killed, 1);
    };
    let r = f.run_with(RunOptions {
        between_plan_and_apply: Some(&mut hook),
        ..Default::default()
    });
    assert_eq!(r.links[0].to_right.created, 500);
    let n: i64 = c.query_one("SELECT count(*) FROM b", &[]).unwrap().get(0);
    assert_eq!(n, 500);
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn init_looks_at_a_postgres_table_and_a_sqlite_table() {
    let Some(db) = pg() else { return };
    db.pg_client()
        .batch_execute("CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, full_name text, amount numeric(12,2));
                        INSERT INTO contacts (email, full_name, amount) VALUES ('a@x.org', 'Ann', 1.50);")
        .unwrap();
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT UNIQUE, full_name TEXT, amount TEXT);",
        "",
    );
    std::fs::remove_file(f.config_path()).unwrap();
    support::syncline(f.path())
        .env("CRM_URL", &db.url)
        .args([
            "init",
            "postgres:${CRM_URL}#contacts",
            "sqlite:right.db#customers",
            "--write",
        ])
        .assert()
        .code(0);
    let config = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        config.contains("url = \"${CRM_URL}\""),
        "the secret stays in the environment: {config}"
    );
    assert!(config.contains("match_on = [\"email\"]"), "{config}");
    support::syncline(f.path())
        .env("CRM_URL", &db.url)
        .arg("run")
        .assert()
        .code(0);
    let amount: String = rusqlite::Connection::open(f.path().join("right.db"))
        .unwrap()
        .query_row("SELECT amount FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(amount, "1.50");
}

/// The most common replication: a one-way link into a table whose key is the source's.
/// `init` carries the key; without it, `check` and `run` stop before anything is sent
/// (a run once sent every record, had each refused and replayed alone, and exited 3).
#[test]
fn a_one_way_replication_carries_its_key_or_is_refused_before_a_run() {
    let Some(db) = pg() else { return };
    db.pg_client()
        .batch_execute(
            "CREATE TABLE src (id bigint PRIMARY KEY, item text NOT NULL, qty int);
             CREATE TABLE dst (id bigint PRIMARY KEY, item text NOT NULL, qty int);
             INSERT INTO src SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 3000) g;",
        )
        .unwrap();
    let f = Fixture::new("", "", "");
    std::fs::remove_file(f.config_path()).unwrap();
    support::syncline(f.path())
        .env("DB_URL", &db.url)
        .args([
            "init",
            "postgres:${DB_URL}#src",
            "postgres:${DB_URL}#dst",
            "--write",
        ])
        .assert()
        .code(0);
    let config = std::fs::read_to_string(f.config_path()).unwrap();
    assert!(
        config.contains("\nid = {}\n"),
        "init carries the key: {config}"
    );
    support::syncline(f.path())
        .env("DB_URL", &db.url)
        .arg("check")
        .assert()
        .code(0)
        .stdout(predicates::str::contains("0 error(s), 0 warning(s)"));
    // WHEN the key is taken out of the fields THEN check and run refuse, nothing sent
    std::fs::write(f.config_path(), config.replace("\nid = {}\n", "\n")).unwrap();
    support::syncline(f.path())
        .env("DB_URL", &db.url)
        .arg("check")
        .assert()
        .code(2)
        .stdout(predicates::str::contains(
            "carry the left key with `id = {}`",
        ));
    support::syncline(f.path())
        .env("DB_URL", &db.url)
        .arg("run")
        .assert()
        .code(2);
    let mut c = db.pg_client();
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM dst", &[]).unwrap().get(0)
    };
    assert_eq!(count(&mut c), 0);
    // AND with the key carried, the copy is exact and a second run writes nothing
    std::fs::write(f.config_path(), &config).unwrap();
    support::syncline(f.path())
        .env("DB_URL", &db.url)
        .arg("run")
        .assert()
        .code(0);
    let differ: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT * FROM src EXCEPT SELECT * FROM dst) d",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!((count(&mut c), differ), (3000, 0));
    support::syncline(f.path())
        .env("DB_URL", &db.url)
        .arg("run")
        .assert()
        .code(0)
        .stdout(predicates::str::contains("0 created, 0 updated, 0 deleted"));
}

/// A link's pairs belong to the systems they were made with: the same config pointed at
/// another database with the same table (another kind, or another PostgreSQL database)
/// is refused with nothing written, until `run --relink`.
#[test]
fn pairs_made_with_one_database_are_never_applied_to_another() {
    let (Some(a), Some(b)) = (pg(), pg()) else {
        return;
    };
    for db in [&a, &b] {
        db.pg_client()
            .batch_execute(
                "CREATE TABLE contacts (id bigint PRIMARY KEY, email text NOT NULL, name text);
                 CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text);",
            )
            .unwrap();
    }
    a.pg_client()
        .batch_execute("INSERT INTO contacts VALUES (1, 'a@x.org', 'Ann'), (2, 'b@x.org', 'Bob');")
        .unwrap();
    // Database b holds other people under the same keys.
    b.pg_client()
        .batch_execute("INSERT INTO customers VALUES (1, 'z@x.org', 'Zed'), (2, 'y@x.org', 'Yan');")
        .unwrap();
    let link = "[links.c]\nleft = \"crm.contacts\"\nright = \"billing.customers\"\nmatch_on = [\"email\"]\non_delete = { left = \"propagate\" }\n[links.c.fields]\nid = {}\nemail = {}\nname = {}\n";
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT);",
        "",
    );
    let systems = |right: &str| {
        format!(
            "[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"\n{right}\n{link}",
            a.url
        )
    };
    std::fs::write(
        f.config_path(),
        systems("[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\""),
    )
    .unwrap();
    assert_eq!(f.run().links[0].to_right.created, 2);
    let b_rows = |db: &TempDatabase| -> Vec<String> {
        db.pg_client()
            .query("SELECT email FROM customers ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    // WHEN billing becomes a PostgreSQL database holding the same table and keys, then
    // another PostgreSQL database THEN each is refused and nothing is written
    for target in [&b, &a] {
        std::fs::write(
            f.config_path(),
            systems(&format!(
                "[systems.billing]\nkind = \"postgres\"\nurl = \"{}\"",
                target.url
            )),
        )
        .unwrap();
        let before = b_rows(target);
        let r = f.run();
        let why = r.links[0].refused.clone().unwrap_or_default();
        assert!(why.contains("the right was sqlite file"), "{why}");
        assert!(why.contains("is now postgres"), "{why}");
        assert_eq!(writes(&r), 0);
        assert_eq!(b_rows(target), before);
    }
    // AND started over on purpose, b's customers are paired again — here by the carried
    // key, which says key 1 is key 1 — and get the owner's values; then all is quiet
    std::fs::write(
        f.config_path(),
        systems(&format!(
            "[systems.billing]\nkind = \"postgres\"\nurl = \"{}\"",
            b.url
        )),
    )
    .unwrap();
    let r = f.run_with(RunOptions {
        relink: true,
        ..Default::default()
    });
    assert!(r.links[0].refused.is_none());
    assert_eq!(b_rows(&b), ["a@x.org", "b@x.org"]);
    assert_eq!(writes(&f.run()), 0);
}

/// A value the receiver cannot store is refused with that reason on the first run: SQLite
/// keeps NULL for a NaN real (which once became two runs of "drift correction" and then a
/// flapping quarantine blaming a trigger).
#[test]
fn a_nan_sqlite_cannot_store_is_refused_with_the_reason() {
    let Some(db) = pg() else { return };
    db.pg_client()
        .batch_execute(
            "CREATE TABLE m (id bigint PRIMARY KEY, x float8);
             INSERT INTO m VALUES (1, 'NaN'), (2, 1.5), (3, 'Infinity');",
        )
        .unwrap();
    let f = fixture(
        &format!(
            "[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n",
            db.url
        ),
        "[links.m]\nleft = \"crm.m\"\nright = \"billing.m\"\n[links.m.fields]\nid = {}\nx = {}\n",
    );
    rusqlite::Connection::open(f.path().join("right.db"))
        .unwrap()
        .execute_batch("CREATE TABLE m (id INTEGER PRIMARY KEY, x REAL);")
        .unwrap();
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.created, r.links[0].to_right.rejected),
        (2, 1),
        "{:?}",
        r.links[0]
    );
    let q = f.store().quarantine(Some("m")).unwrap();
    assert_eq!(q.len(), 1);
    assert!(
        q[0].reason.contains("SQLite cannot store NaN"),
        "{}",
        q[0].reason
    );
    // Nothing flaps: the next run tries it again, refused the same way, and writes nothing.
    let again = f.run();
    assert_eq!(again.links[0].to_right.rejected, 1);
    assert_eq!(again.links[0].to_right.created, 0);
}

/// A default the receiver fills on create, with no trigger in sight, is still seen: a
/// create that leaves a column with a default out is read back, and the value flows back
/// to an owner-right field's left in the same run. A column that rounds (timestamp(0)) is
/// read back too; everything stored exactly as sent is not, and is still quiet.
#[test]
fn defaults_and_rounding_columns_are_read_back_without_triggers() {
    let Some(db) = pg() else { return };
    db.pg_client()
        .batch_execute(
            "CREATE TABLE a (id bigint PRIMARY KEY, name text, status text, at timestamp);
             CREATE TABLE b (id bigint PRIMARY KEY, name text, status text NOT NULL DEFAULT 'active', at timestamp(0));
             INSERT INTO a VALUES (1, 'Ann', NULL, '2026-01-01 10:00:00.7'), (2, 'Bob', 'paused', '2026-01-01 10:00:00');",
        )
        .unwrap();
    let f = fixture(
        &both_in_postgres(&db),
        "[links.c]\nleft = \"crm.a\"\nright = \"billing.b\"\nmode = \"two-way\"\non_delete = { left = \"propagate\", right = \"ignore\" }\n[links.c.fields]\nid = { owner = \"left\" }\nname = { owner = \"left\" }\nstatus = { owner = \"right\" }\nat = { owner = \"left\" }\n",
    );
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.created, r.links[0].to_left.updated),
        (2, 1),
        "{:?}",
        r.links[0]
    );
    let mut c = db.pg_client();
    let status: Vec<String> = c
        .query("SELECT status FROM a ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(status, ["active", "paused"]);
    assert_eq!(writes(&f.run()), 0);
    assert_eq!(writes(&f.run()), 0);
}

/// A read whose connection is lost part-way (the server ends the session in the middle
/// of a scan) runs the link again on new connections: the first load completes in the
/// same `run`, every record once.
#[test]
fn a_scan_whose_connection_is_lost_part_way_runs_the_link_again() {
    let Some(db) = pg() else { return };
    db.pg_client()
        .batch_execute(
            "CREATE TABLE src (id bigint PRIMARY KEY, note text);
             CREATE TABLE dst (id bigint PRIMARY KEY, note text);
             INSERT INTO src SELECT g, 'note ' || g FROM generate_series(1, 200000) g;",
        )
        .unwrap();
    let f = fixture(
        &both_in_postgres(&db),
        "[links.t]\nleft = \"crm.src\"\nright = \"billing.dst\"\non_delete = { left = \"propagate\" }\n[links.t.fields]\nid = {}\nnote = {}\n",
    );
    // Another session ends the scan's once, as a failover or an administrator would.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (url, name, done) = (db.url.clone(), db.name().to_string(), done.clone());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while std::time::Instant::now() < deadline
                && !done.load(std::sync::atomic::Ordering::SeqCst)
            {
                let killed: i64 = c
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                          WHERE datname = $1 AND state = 'active' AND query LIKE 'COPY (SELECT%' AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .unwrap()
                    .get(0);
                if killed > 0 {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            false
        })
    };
    let r = f.run();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(killer.join().unwrap(), "the scan was never caught running");
    assert_eq!(r.links[0].to_right.rejected, 0, "{:?}", r.links[0]);
    let mut c = db.pg_client();
    let (rows, distinct): (i64, i64) = {
        let row = c
            .query_one("SELECT count(*), count(DISTINCT id) FROM dst", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((rows, distinct), (200000, 200000));
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn tls_is_negotiated_and_verified_as_sslmode_says() {
    let Some(db) = pg() else { return };
    let mut c = db.pg_client();
    let ssl: String = c.query_one("SHOW ssl", &[]).unwrap().get(0);
    if ssl != "on" {
        eprintln!("skipped: this PostgreSQL server has ssl = off");
        return;
    }
    c.batch_execute("CREATE TABLE a (id int PRIMARY KEY, note text); CREATE TABLE b (id int PRIMARY KEY, note text); INSERT INTO a VALUES (1, 'x');").unwrap();
    let config = |mode: &str| {
        format!(
            "[systems.crm]\nkind = \"postgres\"\nurl = \"{url}?sslmode={mode}\"\n[systems.billing]\nkind = \"postgres\"\nurl = \"{url}\"\n[links.n]\nleft = \"crm.a\"\nright = \"billing.b\"\n[links.n.fields]\nid = {{}}\nnote = {{}}\n",
            url = db.url
        )
    };
    // require: encrypted (the certificate is not checked, as in libpq)
    let f = fixture(&config("require"), "");
    let url = db.url.clone();
    let mut encrypted = None;
    let mut hook = |_: &str| {
        let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        encrypted = Some(
            other
                .query_one(
                    "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                      WHERE a.application_name = 'syncline:crm' AND a.datname = current_database()",
                    &[],
                )
                .unwrap()
                .get::<_, Option<bool>>(0),
        );
    };
    let r = f.run_with(RunOptions {
        between_plan_and_apply: Some(&mut hook),
        ..Default::default()
    });
    assert_eq!(r.links[0].to_right.created, 1);
    assert_eq!(
        encrypted,
        Some(Some(true)),
        "the left connection was not encrypted"
    );
    // verify-full: a certificate no trusted root signed is refused, by name
    let f = fixture(&config("verify-full"), "");
    support::syncline(f.path())
        .arg("run")
        .assert()
        .code(1)
        .stderr(predicates::str::contains("certificate"));
    // With the server's own (self-signed) certificate as the root: verify-ca accepts it
    // for 127.0.0.1, verify-full does not unless the certificate names 127.0.0.1.
    let cert_file: String = c.query_one("SHOW ssl_cert_file", &[]).unwrap().get(0);
    let Ok(pem) = std::fs::read_to_string(&cert_file) else {
        eprintln!("skipped the verify-ca part: cannot read the server's {cert_file}");
        return;
    };
    let root = f.path().join("server-root.pem");
    std::fs::write(&root, pem).unwrap();
    let with_root = |mode: &str| config(&format!("{mode}&sslrootcert={}", root.display()));
    // Each run below is a fresh first load.
    c.batch_execute("DELETE FROM b").unwrap();
    let f = fixture(&with_root("verify-ca"), "");
    let (code, stderr) = support::run_binary(f.path());
    assert_eq!(code, Some(0), "{stderr}");
    c.batch_execute("DELETE FROM b").unwrap();
    let f = fixture(&with_root("verify-full"), "");
    let (code, stderr) = support::run_binary(f.path());
    if code != Some(0) {
        assert!(stderr.contains("not valid for name"), "{stderr}");
    }
}

#[test]
fn a_shared_state_store_is_upgraded_to_sortable_keys_as_the_embedded_one_is() {
    use syncline::model::{Key, Value};
    use syncline::state::StateStore;
    let Some(db) = pg() else { return };
    drop(StateStore::open_postgres(&db.url, false).unwrap());
    let mut c = db.pg_client();
    // Back to v3's tables (v5 added grouped journal entries, v6 listed their records in
    // chunks), then keys as a store before v4 held them, each with the key it stands for.
    c.batch_execute("ALTER TABLE journal DROP COLUMN records; DROP TABLE journal_member_chunks;")
        .unwrap();
    let numbers = [
        0,
        1,
        9,
        10,
        99,
        12345,
        i64::MAX,
        -1,
        -9,
        -10,
        -100,
        -4_200_000_000,
        i64::MIN,
    ];
    let mut keys: Vec<(String, Key)> = numbers
        .iter()
        .map(|&n| (format!("I{n}"), Key::single(Value::Integer(n))))
        .collect();
    keys.push((
        "I-12\u{1f}Tx\\uI7\\\\\u{1f}I7".into(),
        Key(vec![
            Value::Integer(-12),
            Value::Text("x\u{1f}I7\\".into()),
            Value::Integer(7),
        ]),
    ));
    keys.push((
        "Tplain I".into(),
        Key::single(Value::Text("plain I".into())),
    ));
    for (n, (old, _)) in keys.iter().enumerate() {
        c.execute(
            "INSERT INTO pairs (link, left_key, right_key, base) VALUES ('c', $1, $2, '{}')",
            &[old, &format!("T{n}")],
        )
        .unwrap();
        c.execute(
            "INSERT INTO journal (run, at, link, left_key, right_key, side, op, reason, status)
             VALUES (1, 't', 'c', $1, NULL, 'right', 'create', 'new on the left', 'applied')",
            &[old],
        )
        .unwrap();
    }
    c.batch_execute(
        "INSERT INTO quarantine VALUES ('c', 'left', 'I5', 'f', 'bad value', 'why', 1, 1);
         INSERT INTO conflicts (link, left_key, right_key, unit, left_value, right_value, cause, status, detected_run, last_seen_run)
           VALUES ('c', 'I6', 'I-6', 'f', 'a', 'b', 'both changed', 'open', 1, 1);
         UPDATE syncline_schema SET version = 3;",
    )
    .unwrap();
    // A read-only open asks for the upgrade; a writing one makes it.
    let Err(refused) = StateStore::open_postgres(&db.url, true) else {
        panic!("a read-only open of a v3 store must ask for an upgrade")
    };
    assert!(refused.to_string().contains("syncline run"), "{refused}");
    drop(StateStore::open_postgres(&db.url, false).unwrap());
    for (n, (old, key)) in keys.iter().enumerate() {
        let row = c
            .query_one(
                "SELECT left_key FROM pairs WHERE right_key = $1",
                &[&format!("T{n}")],
            )
            .unwrap();
        assert_eq!(row.get::<_, String>(0), key.encode(), "re-encoding {old:?}");
    }
    let journal: Vec<String> = c
        .query("SELECT left_key FROM journal ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = keys.iter().map(|(_, k)| k.encode()).collect();
    assert_eq!(journal, expected);
    let row = c
        .query_one(
            "SELECT q.key, k.left_key, k.right_key FROM quarantine q, conflicts k",
            &[],
        )
        .unwrap();
    let int = |n: i64| Key::single(Value::Integer(n)).encode();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        (int(5), int(6), int(-6))
    );
}

/// v5 listed a grouped journal entry's records a row each; v6 lists them in chunks. A
/// shared store upgraded with such rows still finds the entry by each record's key.
#[test]
fn a_shared_store_keeps_grouped_entries_findable_through_the_v6_upgrade() {
    use syncline::state::StateStore;
    let Some(db) = pg() else { return };
    drop(StateStore::open_postgres(&db.url, false).unwrap());
    let mut c = db.pg_client();
    c.batch_execute(
        "DROP TABLE journal_member_chunks;
         CREATE TABLE journal_members (
             link TEXT NOT NULL, key_side TEXT NOT NULL, key TEXT NOT NULL, entry BIGINT NOT NULL,
             PRIMARY KEY (link, key_side, key, entry));
         INSERT INTO runs (id, started_at, command, status) VALUES (1, 't', 'run', 'ok');
         INSERT INTO journal (id, run, at, link, side, op, reason, status, records)
           VALUES (7, 1, 't', 'c', 'right', 'create', 'new on the left', 'applied', 3);
         INSERT INTO journal_members (link, key_side, key, entry)
           VALUES ('c', 'left', 'Pa1', 7), ('c', 'left', 'Pa2', 7), ('c', 'left', 'Pb10', 7);
         INSERT INTO pairs (link, left_key, right_key, base) VALUES ('c', 'Pb10', 'Tten', '{}');
         UPDATE syncline_schema SET version = 5;",
    )
    .unwrap();
    let mut s = StateStore::open_postgres(&db.url, false).unwrap();
    for (key, shown) in [("Pa2", "2"), ("Pb10", "10"), ("Tten", "10")] {
        let found = s.journal(Some("c"), Some(key), None, 10).unwrap();
        assert_eq!(found.len(), 1, "{key}");
        assert_eq!(found[0].records, Some(3));
        assert_eq!(found[0].left_key.as_deref(), Some(shown), "{key}");
    }
    assert!(
        s.journal(Some("c"), Some("Pa3"), None, 10)
            .unwrap()
            .is_empty()
    );
}

/// Advisory locks are per database, and so are a shared store's holds: a link held in
/// one store is free in another on the same server, and only its own store names the
/// holder (the server's lock list shows every database's locks).
#[test]
fn a_link_held_in_one_shared_store_is_free_in_another_on_the_same_server() {
    use syncline::state::{LinkHold, StateStore};
    let (Some(a), Some(b)) = (pg(), pg()) else {
        return;
    };
    let mut holder = StateStore::open_postgres(&a.url, false).unwrap();
    assert_eq!(holder.hold_link("c").unwrap(), LinkHold::Held);
    let mut elsewhere = StateStore::open_postgres(&b.url, false).unwrap();
    assert_eq!(elsewhere.link_holder("c").unwrap(), None);
    assert_eq!(elsewhere.hold_link("c").unwrap(), LinkHold::Held);
    let mut looker = StateStore::open_postgres(&a.url, true).unwrap();
    let named = looker.link_holder("c").unwrap().expect("held in store a");
    assert!(
        named.contains(&format!("pid {}", std::process::id())),
        "{named}"
    );
    holder.release_link("c").unwrap();
    assert_eq!(looker.link_holder("c").unwrap(), None);
}
