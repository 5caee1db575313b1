//! Fields that mean different things on each side, two-way, from SQLite to SQLite,
//! PostgreSQL and MariaDB: a picklist under a value map (with a value the map does not
//! name), an amount in units on the left and in cents on the right, a country name
//! against its ISO code, and `first_name` + `last_name` against `full_name` (with a name
//! that does not split). Edits on both sides flow in each side's meaning; a mapped value
//! is an echo, so a run after a run writes nothing; a value with no counterpart is
//! quarantined with its reason and the rest of the record and the run go on.

mod support;

use support::sql::Sql;
use support::{Fixture, TempDatabase, server_url, syncline, writes};

const LINK: &str = r#"
[links.c]
left = "crm.contacts"
right = "billing.customers"
mode = "two-way"
conflict = "left-wins"
on_delete = { left = "propagate", right = "propagate" }

[links.c.fields]
id = { owner = "left" }
status = { right = "state", owner = "both", map = { active = "current", churned = "cancelled", lead = "trial" } }
amount = { right = "amount_cents", owner = "both", scale = 100 }
country = { right = "country_code", owner = "both", map = { "Germany" = "DE", "France" = "FR", "United States" = "US" } }

[links.c.composed]
full_name = { left = ["first_name", "last_name"], split = "last", owner = "both" }
"#;

const LEFT: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, status TEXT, amount NUMERIC, country TEXT);";

/// The right side's rows, `id|full_name|state|amount_cents|country_code` by id, in
/// any kind's SQL.
fn right_rows(right: &mut dyn Sql) -> Vec<String> {
    right.texts(
        // No NULL in this scenario's right rows (CONCAT_WS would skip it).
        "SELECT CONCAT_WS('|', id, full_name, state, amount_cents, country_code) FROM customers ORDER BY id",
    )
}

fn left_rows(left: &mut dyn Sql) -> Vec<String> {
    left.texts(
        "SELECT id || '|' || COALESCE(first_name, 'NULL') || '|' || COALESCE(last_name, 'NULL') || '|' || COALESCE(status, 'NULL') || '|' || COALESCE(amount, 'NULL') || '|' || COALESCE(country, 'NULL') FROM contacts ORDER BY id",
    )
}

fn quiet(f: &Fixture, what: &str) {
    let r = f.run();
    assert_eq!(writes(&r), 0, "{what}: {:?}", r.links[0].planned);
}

fn scenario(f: &Fixture, left: &mut dyn Sql, right: &mut dyn Sql) {
    left.run_sql(
        "INSERT INTO contacts VALUES (1, 'Ada', 'Lovelace', 'active', 12.34, 'Germany');
         INSERT INTO contacts VALUES (2, 'Grace', 'Hopper', 'lead', 0.5, 'France');
         INSERT INTO contacts VALUES (3, 'Alan', 'Turing', 'prospect', 7, 'United States');",
    );
    // WHEN the first run creates the records on the right
    let r = f.run();
    let l = &r.links[0];
    // THEN each arrives in the right's meaning; the one whose status the map does not
    // name is quarantined with the field and the value, and the rest is created
    assert_eq!(l.to_right.created, 2, "{l:?}");
    assert_eq!(l.quarantined, 1, "{l:?}");
    assert_eq!(
        right_rows(right),
        [
            "1|Ada Lovelace|current|1234|DE",
            "2|Grace Hopper|trial|50|FR"
        ]
    );
    let shown = quarantine_of(f);
    assert!(
        shown.contains("status") && shown.contains("\"prospect\""),
        "{shown}"
    );
    // AND a mapped value is an echo: the next run writes nothing
    quiet(f, "a run after the first load");

    // WHEN each side edits in its own meaning
    right.run_sql("UPDATE customers SET state = 'cancelled', amount_cents = 1999 WHERE id = 1");
    left.run_sql(
        "UPDATE contacts SET last_name = 'Hopper-Murray', country = 'United States' WHERE id = 2",
    );
    let r = f.run();
    assert_eq!(
        (r.links[0].to_left.updated, r.links[0].to_right.updated),
        (1, 1),
        "{:?}",
        r.links[0].planned
    );
    // THEN each change arrives in the other side's meaning, exactly (19.99, not a float)
    assert_eq!(
        left_rows(left)[..2],
        [
            "1|Ada|Lovelace|churned|19.99|Germany",
            "2|Grace|Hopper-Murray|lead|0.5|United States"
        ]
    );
    assert_eq!(
        right_rows(right),
        [
            "1|Ada Lovelace|cancelled|1999|DE",
            "2|Grace Hopper-Murray|trial|50|US"
        ]
    );
    quiet(f, "a run after edits on both sides");

    // WHEN the right writes a name with nothing to split at, and a state the map does not
    // name, while the amount changes too
    right.run_sql("UPDATE customers SET full_name = 'Ada', amount_cents = 2500 WHERE id = 1");
    right.run_sql("UPDATE customers SET state = 'archived' WHERE id = 2");
    let r = f.run();
    // THEN neither is written half-right: both are quarantined with their reasons, and
    // the amount, which survives the way back, arrives
    assert_eq!(r.links[0].to_left.updated, 1, "{:?}", r.links[0].planned);
    assert_eq!(left_rows(left)[0], "1|Ada|Lovelace|churned|25|Germany");
    assert_eq!(
        left_rows(left)[1],
        "2|Grace|Hopper-Murray|lead|0.5|United States"
    );
    let shown = quarantine_of(f);
    assert!(shown.contains("does not split"), "{shown}");
    assert!(shown.contains("\"archived\""), "{shown}");
    // AND, nobody editing, nothing more is written while they wait for a person
    quiet(f, "a run with values held");

    // WHEN a person fixes the values at their source
    right.run_sql(
        "UPDATE customers SET full_name = 'Ada King', state = 'current' WHERE id IN (1, 2)",
    );
    left.run_sql("UPDATE contacts SET status = 'lead' WHERE id = 3");
    let r = f.run();
    // THEN all of it flows, the held record is created, and all goes quiet
    assert_eq!(r.links[0].to_right.created, 1, "{:?}", r.links[0]);
    assert_eq!(r.links[0].quarantined, 0, "{:?}", r.links[0]);
    assert_eq!(
        left_rows(left),
        [
            "1|Ada|King|active|25|Germany",
            "2|Ada|King|active|0.5|United States",
            "3|Alan|Turing|lead|7|United States"
        ]
    );
    assert_eq!(right_rows(right)[2], "3|Alan Turing|trial|700|US");
    quiet(f, "a run after the fixes");
    // Compared in the right's meaning, the two sides hold the same.
    let out = syncline(f.path()).arg("verify").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A cents value changed by hand on the right is drift, shown in its own meaning.
    right.run_sql("UPDATE customers SET amount_cents = 701 WHERE id = 3");
    let out = syncline(f.path()).arg("verify").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("amount: 1 record(s) differ") && text.contains("701"),
        "{text}"
    );
}

/// What `syncline quarantine` lists for the link.
fn quarantine_of(f: &Fixture) -> String {
    let out = syncline(f.path())
        .args(["quarantine", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn sqlite_left(f: &Fixture) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(f.path().join("left.db")).unwrap();
    c.execute_batch(LEFT).unwrap();
    c
}

#[test]
fn sqlite_to_sqlite_fields_that_mean_different_things() {
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, full_name TEXT, state TEXT, amount_cents INTEGER, country_code TEXT);",
        LINK,
    );
    let mut left = sqlite_left(&f);
    let mut right = rusqlite::Connection::open(f.path().join("right.db")).unwrap();
    scenario(&f, &mut left, &mut right);
}

#[test]
fn sqlite_to_postgres_fields_that_mean_different_things() {
    let Some(url) = server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let db = TempDatabase::postgres(&url);
    let mut right = db.pg_client();
    right.run_sql(
        "CREATE TABLE customers (id bigint PRIMARY KEY, full_name text, state text, amount_cents bigint, country_code char(2));",
    );
    let f = Fixture::sqlite_to_server("postgres", &db.url, LINK);
    let mut left = sqlite_left(&f);
    scenario(&f, &mut left, &mut right);
}

#[test]
fn sqlite_to_mariadb_fields_that_mean_different_things() {
    let Some(url) = server_url(
        "SYNCLINE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    ) else {
        return;
    };
    let db = TempDatabase::mysql(&url);
    let mut right = db.mysql_conn();
    right.run_sql(
        "CREATE TABLE customers (id bigint PRIMARY KEY, full_name varchar(200), state varchar(20), amount_cents bigint, country_code char(2))",
    );
    let f = Fixture::sqlite_to_server("mysql", &db.url, LINK);
    let mut left = sqlite_left(&f);
    scenario(&f, &mut left, &mut right);
}

#[test]
fn check_refuses_a_map_that_cannot_be_read_back_and_names_what_collides() {
    // GIVEN a status both sides own, whose map sends two left values to one right value
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, status TEXT);",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, state TEXT);",
        r#"
[links.c]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "id"
mode = "two-way"
on_delete = { left = "propagate", right = "ignore" }

[links.c.fields]
id = { owner = "left" }
status = { right = "state", owner = "both", conflict = "left-wins", map = { active = "current", paying = "current", lead = "trial" } }
"#,
    );
    // WHEN checked
    let out = syncline(f.path()).arg("check").output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // THEN it is an error that names the values that collide, at the field's line
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("map-invertible"), "{text}");
    assert!(text.contains("active, paying"), "{text}");
    assert!(text.contains("syncline.toml:"), "{text}");

    // AND owned by the left only, the same map is fine: it is only read one way
    let config = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        config.replace(
            "owner = \"both\", conflict = \"left-wins\", map",
            "owner = \"left\", map",
        ),
    )
    .unwrap();
    let out = syncline(f.path()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("map-invertible"), "{text}");
}

#[test]
fn check_names_the_records_whose_values_would_not_survive() {
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, full_name TEXT, state TEXT, amount_cents INTEGER, country_code TEXT);
         INSERT INTO customers VALUES (7, 'Madonna', 'trial', 100, 'FR');",
        LINK,
    );
    let left = sqlite_left(&f);
    left.execute_batch(
        "INSERT INTO contacts VALUES (1, 'Ann Marie', 'Smith', 'active', 1, 'Germany');
         INSERT INTO contacts VALUES (2, 'Alan', 'Turing', 'prospect', 7, 'France');
         INSERT INTO contacts VALUES (3, 'Grace', 'Hopper', 'lead', 2, 'France');",
    )
    .unwrap();
    let out = syncline(f.path()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The name with nothing to split at, on the right.
    assert!(
        text.contains("right record 7") && text.contains("does not split"),
        "{text}"
    );
    // The status the map does not name, on the left.
    assert!(
        text.contains("left record 2") && text.contains("\"prospect\""),
        "{text}"
    );
    // A first name with a space: split at the last space it comes back whole, but the
    // left's "Ann Marie" + "Smith" is one way to read "Ann Marie Smith" — it survives.
    assert!(!text.contains("left record 1"), "{text}");
    assert!(!text.contains("record 3"), "{text}");
}

#[test]
fn explain_shows_the_value_as_held_and_as_read_in_the_other_meaning() {
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, full_name TEXT, state TEXT, amount_cents INTEGER, country_code TEXT);",
        LINK,
    );
    let left = sqlite_left(&f);
    left.execute(
        "INSERT INTO contacts VALUES (3, 'Alan', 'Turing', 'lead', 7, 'France')",
        [],
    )
    .unwrap();
    f.run();
    let out = syncline(f.path())
        .args(["explain", "c", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("left \"Turing\" (read as \"Alan Turing\") | right \"Alan Turing\""),
        "{text}"
    );
    assert!(
        text.contains("left \"lead\" (read as \"trial\") | right \"trial\""),
        "{text}"
    );
    assert!(
        text.contains("left 7 (read as \"700\") | right 700"),
        "{text}"
    );
}

#[test]
fn init_suggests_a_value_map_for_a_picklist_named_differently_and_only_suggests() {
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, status TEXT, city TEXT);
         INSERT INTO contacts VALUES (1, 'active', 'Oslo'), (2, 'active', 'Rome'), (3, 'active', 'Oslo'),
           (4, 'churned', 'Rome'), (5, 'churned', 'Oslo'), (6, 'lead', 'Rome');",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, status TEXT, city TEXT);
         INSERT INTO customers VALUES (1, 'current', 'Oslo'), (2, 'current', 'Rome'), (3, 'current', 'Oslo'),
           (4, 'cancelled', 'Rome'), (5, 'cancelled', 'Oslo'), (6, 'trial', 'Rome');",
        "",
    );
    std::fs::remove_file(f.config_path()).unwrap();
    let out = syncline(f.path())
        .args([
            "init",
            "sqlite:left.db#contacts",
            "sqlite:right.db#customers",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    // Paired by how often each value occurs, as a comment; the field itself is plain.
    assert!(
        text.contains(
            "# status = { map = { active = \"current\", churned = \"cancelled\", lead = \"trial\" } }"
        ),
        "{text}"
    );
    assert!(text.contains("\nstatus = {}\n"), "{text}");
    // The same values on both sides: nothing to suggest.
    assert!(!text.contains("# city = { map"), "{text}");
}

#[test]
fn dates_as_text_in_another_format_and_zone_flow_both_ways_and_go_quiet() {
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, since TEXT, seen TEXT);
         INSERT INTO contacts VALUES (1, '2026-02-01', '2026-02-01 23:30:00');",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, since TEXT, seen TEXT);",
        r#"
[links.c]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "id"
mode = "two-way"
conflict = "left-wins"
on_delete = { left = "propagate", right = "ignore" }

[links.c.fields]
id = { owner = "left" }
since = { owner = "both", format = "%d/%m/%Y" }
seen = { owner = "both", format = "%d.%m.%Y %H:%M", offset = "+02:00" }
"#,
    );
    f.run();
    let right = |f: &Fixture| {
        support::Fixture::rows(&f.right, "SELECT since || ' | ' || seen FROM customers")
    };
    // The left's UTC is the right's local time two hours ahead, in its format.
    assert_eq!(
        right(&f),
        vec![vec![support::text("01/02/2026 | 02.02.2026 01:30")]]
    );
    quiet(&f, "a formatted date is an echo");
    f.right
        .execute(
            "UPDATE customers SET since = '15/03/2026', seen = '01.04.2026 00:15'",
            [],
        )
        .unwrap();
    f.run();
    assert_eq!(
        support::Fixture::rows(&f.left, "SELECT since || ' | ' || seen FROM contacts"),
        vec![vec![support::text("2026-03-15 | 2026-03-31 22:15:00")]]
    );
    quiet(&f, "after a date came back");
    // A date the right wrote in another format is held, not guessed.
    f.right
        .execute("UPDATE customers SET since = '2026-04-01'", [])
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].quarantined, 1, "{:?}", r.links[0]);
    assert!(quarantine_of(&f).contains("does not read as \"%d/%m/%Y\""));
    quiet(&f, "with the date held");
}

const ADDRESS_LINK: &str = r#"
[links.c]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "id"
mode = "two-way"
conflict = "left-wins"
on_delete = { left = "propagate", right = "ignore" }

[links.c.fields]
id = { owner = "left" }

[links.c.composed]
address = { left = ["street", "city"], form = "json", owner = "both" }
"#;

/// `street` + `city` on the left, one JSON `address` on the right: both ways, quiet, and
/// an object with a key no field takes is held, not written half-right.
fn address_scenario(f: &Fixture, right: &mut dyn Sql, address_text: &str) {
    let left = rusqlite::Connection::open(f.path().join("left.db")).unwrap();
    left.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, street TEXT, city TEXT);
         INSERT INTO contacts VALUES (1, 'Main 1', 'Oslo'), (2, NULL, 'Rome');",
    )
    .unwrap();
    assert_eq!(f.run().links[0].to_right.created, 2);
    let addresses = |right: &mut dyn Sql| -> Vec<serde_json::Value> {
        right
            .texts(&format!("SELECT {address_text} FROM customers ORDER BY id"))
            .iter()
            .map(|t| serde_json::from_str(t).unwrap())
            .collect()
    };
    assert_eq!(
        addresses(right),
        [
            serde_json::json!({"street": "Main 1", "city": "Oslo"}),
            serde_json::json!({"street": null, "city": "Rome"})
        ]
    );
    quiet(f, "an object is an echo of its parts");
    right.run_sql(r#"UPDATE customers SET address = '{"city": "Bergen", "street": "Bryggen 3"}' WHERE id = 1"#);
    f.run();
    assert_eq!(
        Fixture::rows(
            &left,
            "SELECT street || ', ' || city FROM contacts WHERE id = 1"
        ),
        [[support::text("Bryggen 3, Bergen")]]
    );
    quiet(f, "after an address came back");
    right.run_sql(r#"UPDATE customers SET address = '{"street": "Via Roma 1", "city": "Rome", "zip": "00100"}' WHERE id = 2"#);
    let r = f.run();
    assert_eq!(r.links[0].quarantined, 1, "{:?}", r.links[0]);
    assert!(quarantine_of(f).contains("`zip`"), "{}", quarantine_of(f));
    quiet(f, "with the address held");
}

#[test]
fn street_and_city_as_one_json_address_on_sqlite() {
    let f = Fixture::new(
        "",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, address TEXT);",
        ADDRESS_LINK,
    );
    let mut right = rusqlite::Connection::open(f.path().join("right.db")).unwrap();
    address_scenario(&f, &mut right, "address");
}

#[test]
fn street_and_city_as_one_jsonb_address_on_postgres() {
    let Some(url) = server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let db = TempDatabase::postgres(&url);
    let mut right = db.pg_client();
    right.run_sql("CREATE TABLE customers (id bigint PRIMARY KEY, address jsonb)");
    let f = Fixture::sqlite_to_server("postgres", &db.url, ADDRESS_LINK);
    address_scenario(&f, &mut right, "address::text");
}

#[test]
fn a_translated_write_to_a_record_edited_after_it_was_read_is_not_made() {
    // GIVEN a mapped status both sides own, in step
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, status TEXT);
         INSERT INTO contacts VALUES (1, 'lead');",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, state TEXT);",
        r#"
[links.c]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "id"
mode = "two-way"
conflict = "left-wins"
on_delete = { left = "propagate", right = "ignore" }

[links.c.fields]
id = { owner = "left" }
status = { right = "state", owner = "both", map = { active = "current", churned = "cancelled", lead = "trial" } }
"#,
    );
    f.run();
    // WHEN the right changes it, and a person changes the left's between the run's plan
    // (which writes `churned` to the left) and its apply
    f.right
        .execute("UPDATE customers SET state = 'cancelled'", [])
        .unwrap();
    let left = f.path().join("left.db");
    let mut edit = |_: &str| {
        rusqlite::Connection::open(&left)
            .unwrap()
            .execute("UPDATE contacts SET status = 'active'", [])
            .unwrap();
    };
    let r = f.run_with(syncline::engine::RunOptions {
        between_plan_and_apply: Some(&mut edit),
        ..Default::default()
    });
    // THEN the write is stale, compared as the left holds it, not in the right's meaning
    assert_eq!(r.links[0].to_left.stale_skipped, 1, "{:?}", r.links[0]);
    assert_eq!(
        Fixture::rows(&f.left, "SELECT status FROM contacts"),
        [[support::text("active")]]
    );
    // AND the next run decides both changes by the policy (left wins), then goes quiet
    f.run();
    assert_eq!(
        Fixture::rows(&f.right, "SELECT state FROM customers"),
        [[support::text("current")]]
    );
    assert_eq!(
        Fixture::rows(&f.left, "SELECT status FROM contacts"),
        [[support::text("active")]]
    );
    quiet(&f, "after the stale write");
}
