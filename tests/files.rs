//! `csv` and `jsonl` systems, end to end with the `syncline` binary: two-way with
//! SQLite, what a person's hand-edited file keeps through syncline's rewrites, malformed
//! lines quarantined with their line numbers, dialects, crash safety of the rewrite, and
//! a file edited while syncline writes it.

mod support;

use std::path::Path;
use support::syncline;

const CRM: &str =
    "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT, email TEXT, amount NUMERIC);
    INSERT INTO contacts VALUES (1, 'Ann', 'ann@x.com', 10.5), (2, 'Bob', 'bob@x.com', 3),
        (3, 'Cy, Jr.', 'cy@x.com', NULL);";

fn setup(export: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("exports")).unwrap();
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch(CRM)
        .unwrap();
    std::fs::write(
        dir.path().join("syncline.toml"),
        format!(
            r#"[state]
path = "state.db"

[systems.crm]
kind = "sqlite"
path = "crm.db"

[systems.export]
{export}

[links.contacts]
left = "crm.contacts"
right = "export.contacts"
mode = "two-way"

[links.contacts.fields]
id = {{}}
name = {{}}
email = {{}}
amount = {{}}
"#
        ),
    )
    .unwrap();
    dir
}

const CSV: &str = r#"kind = "csv"
dir = "exports"
types = { id = "integer", amount = "decimal(12,2)" }
columns = { contacts = ["id", "name", "email", "amount"] }"#;

/// Runs a cycle; returns its JSON report's link.
fn run(dir: &Path) -> serde_json::Value {
    let out = syncline(dir).args(["run", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["links"][0].clone()
}

fn wrote(link: &serde_json::Value) -> u64 {
    ["to_right", "to_left"]
        .iter()
        .flat_map(|d| ["created", "updated", "deleted"].map(|op| link[d][op].as_u64().unwrap()))
        .sum()
}

fn crm(dir: &Path, sql: &str) -> Vec<Vec<String>> {
    let db = rusqlite::Connection::open(dir.join("crm.db")).unwrap();
    let mut stmt = db.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => "NULL".to_string(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(_) => "blob".into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn a_csv_export_syncs_both_ways_with_sqlite_and_keeps_what_a_person_added() {
    let dir = setup(CSV);
    let file = dir.path().join("exports/contacts.csv");
    let first = run(dir.path());
    assert_eq!(first["to_right"]["created"], 3, "{first}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "id,name,email,amount\n1,Ann,ann@x.com,10.5\n2,Bob,bob@x.com,3\n3,\"Cy, Jr.\",cy@x.com,\n"
    );
    assert_eq!(wrote(&run(dir.path())), 0, "a second run writes nothing");

    // A person edits the export: a column of their own, an edit, a new record, a line
    // whose amount is not a number and one whose fields are short.
    std::fs::write(
        &file,
        "id,name,email,amount,notes\n1,Ann,ann@x.com,10.5,vip\n2,Bob,bob@new.com,3,\n3,\"Cy, Jr.\",cy@x.com,,\n4,Dee,dee@x.com,7.25,new\n5,Bad,bad@x.com,lots,\n6,Short\n",
    )
    .unwrap();
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch("UPDATE contacts SET name = 'Ann B' WHERE id = 1")
        .unwrap();
    let link = run(dir.path());
    assert_eq!(link["to_right"]["updated"], 1, "{link}");
    assert_eq!(link["to_left"]["updated"], 1, "{link}");
    assert_eq!(link["to_left"]["created"], 1, "{link}");
    assert_eq!(link["quarantined"], 2, "{link}");
    assert_eq!(
        crm(
            dir.path(),
            "SELECT id, name, email, amount FROM contacts ORDER BY id"
        ),
        [
            ["1", "Ann B", "ann@x.com", "10.5"],
            ["2", "Bob", "bob@new.com", "3"],
            ["3", "Cy, Jr.", "cy@x.com", "NULL"],
            ["4", "Dee", "dee@x.com", "7.25"],
        ]
    );
    // The person's column, their values in it and the lines syncline could not read are
    // all still there, where they were.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "id,name,email,amount,notes\n1,Ann B,ann@x.com,10.5,vip\n2,Bob,bob@new.com,3,\n3,\"Cy, Jr.\",cy@x.com,,\n4,Dee,dee@x.com,7.25,new\n5,Bad,bad@x.com,lots,\n6,Short\n"
    );
    let quarantine = syncline(dir.path())
        .args(["quarantine", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&quarantine.stdout);
    assert!(
        listed.contains("line 6, column `amount`: `lots` is not a decimal(12,2)"),
        "{listed}"
    );
    assert!(
        listed.contains("line 7 has 2 fields, the header 5"),
        "{listed}"
    );
    assert_eq!(wrote(&run(dir.path())), 0, "then quiet");
}

#[test]
fn a_jsonl_file_keeps_keys_it_does_not_sync_and_reads_json_types() {
    let dir = setup(
        r#"kind = "jsonl"
dir = "exports"
types = { amount = "decimal" }
columns = { contacts = ["id", "name", "email", "amount"] }"#,
    );
    let file = dir.path().join("exports/contacts.jsonl");
    assert_eq!(run(dir.path())["to_right"]["created"], 3);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with(r#"{"amount":10.5,"email":"ann@x.com","id":1,"name":"Ann"}"#),
        "{text}"
    );
    assert_eq!(wrote(&run(dir.path())), 0);
    // Someone nests data of their own in a record and edits another; a line is not JSON.
    let edited = text
        .replace(r#""id":1,"#, r#""id":1,"tags":{"tier":"gold"},"#)
        .replace("bob@x.com", "bob@new.com")
        + "{not json\n";
    std::fs::write(&file, edited).unwrap();
    let link = run(dir.path());
    assert_eq!(link["to_left"]["updated"], 1, "{link}");
    assert_eq!(link["quarantined"], 1, "{link}");
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch("UPDATE contacts SET name = 'Ann B' WHERE id = 1")
        .unwrap();
    assert_eq!(run(dir.path())["to_right"]["updated"], 1);
    let now = std::fs::read_to_string(&file).unwrap();
    assert!(
        now.contains(r#""id":1,"name":"Ann B","tags":{"tier":"gold"}"#),
        "the nested key is kept: {now}"
    );
    assert!(now.ends_with("{not json\n"), "{now}");
    assert_eq!(wrote(&run(dir.path())), 0);
}

#[test]
fn a_dialect_reads_and_writes_as_declared() {
    let dir = setup(
        r#"kind = "csv"
dir = "exports"
delimiter = ";"
header = false
bom = true
line_ending = "crlf"
types = { id = "integer", amount = "decimal" }
columns = { contacts = ["id", "name", "email", "amount"] }"#,
    );
    let file = dir.path().join("exports/contacts.csv");
    assert_eq!(run(dir.path())["to_right"]["created"], 3);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "\u{feff}1;Ann;ann@x.com;10.5\r\n2;Bob;bob@x.com;3\r\n3;Cy, Jr.;cy@x.com;\r\n"
    );
    assert_eq!(wrote(&run(dir.path())), 0);
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("Bob;", "\"Bob; the builder\";");
    std::fs::write(&file, edited).unwrap();
    assert_eq!(run(dir.path())["to_left"]["updated"], 1);
    assert_eq!(
        crm(dir.path(), "SELECT name FROM contacts WHERE id = 2"),
        [["Bob; the builder"]]
    );
    assert_eq!(wrote(&run(dir.path())), 0);
}

/// A crash while the new file is written beside the old one leaves the old one whole;
/// the next run writes what the crashed one did not.
#[test]
fn a_crash_during_a_rewrite_leaves_the_old_file_intact() {
    let dir = setup(CSV);
    let file = dir.path().join("exports/contacts.csv");
    run(dir.path());
    let before = std::fs::read_to_string(&file).unwrap();
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch("UPDATE contacts SET email = 'ann@new.com' WHERE id = 1")
        .unwrap();
    let crashed = syncline(dir.path())
        .arg("run")
        .env("SYNCLINE_FAULT", "mid_batch:1")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the fault stopped the run");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "old file intact"
    );
    let link = run(dir.path());
    assert_eq!(link["to_right"]["updated"], 1, "{link}");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("ann@new.com")
    );
    assert_eq!(wrote(&run(dir.path())), 0);
}

/// A person saves the file while syncline is writing it: their save is not clobbered —
/// the rewrite starts again from what the file holds now.
#[test]
fn a_file_saved_while_syncline_writes_it_is_not_clobbered() {
    let dir = setup(CSV);
    let file = dir.path().join("exports/contacts.csv");
    run(dir.path());
    rusqlite::Connection::open(dir.path().join("crm.db"))
        .unwrap()
        .execute_batch("UPDATE contacts SET email = 'ann@new.com' WHERE id = 1")
        .unwrap();
    // The run pauses with its new file written beside the old one.
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("syncline"));
    let child = cmd
        .current_dir(dir.path())
        .args(["run", "--json"])
        .env("SYNCLINE_FAULT", "mid_batch:1:pause=1500")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let saved = std::fs::read_to_string(&file)
        .unwrap()
        .replace("3,\"Cy, Jr.\",cy@x.com,", "3,\"Cy, Jr.\",cy@x.com,99");
    let replacement = dir.path().join("exports/.saving");
    std::fs::write(&replacement, saved).unwrap();
    std::fs::rename(&replacement, &file).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let now = std::fs::read_to_string(&file).unwrap();
    assert!(now.contains("ann@new.com"), "syncline's write: {now}");
    assert!(now.contains("cy@x.com,99"), "the person's save: {now}");
    let link = run(dir.path());
    assert_eq!(link["to_left"]["updated"], 1, "the save syncs: {link}");
    assert_eq!(wrote(&run(dir.path())), 0);
}

/// A CSV read streams: the binary's peak memory on a full read (one-way into SQLite,
/// already in step, so nothing is written) grows far less than the file. Set
/// `SYNCLINE_TEST_CSV_ROWS=1000000` for the million rows of the issue.
#[test]
fn a_large_csv_is_read_in_bounded_memory() {
    let rows = std::env::var("SYNCLINE_TEST_CSV_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000u64);
    let Some(small) = peak_of_a_quiet_read(rows / 10) else {
        println!("skipped: GNU time (/usr/bin/time) is not installed");
        return;
    };
    let large = peak_of_a_quiet_read(rows).unwrap();
    // Ten times the rows, not ten times the memory: the read keeps a 16-byte
    // fingerprint per key (to find repeats) and the state store's page cache fills to
    // its cap; no row is held past its batch.
    assert!(
        large < small * 2 && large < 100 * 1024,
        "peak {small} KB for {} rows, {large} KB for {rows}",
        rows / 10
    );
}

/// The peak resident memory (KB) of a full read of a `rows`-row CSV that writes nothing.
fn peak_of_a_quiet_read(rows: u64) -> Option<u64> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("exports")).unwrap();
    let mut text = String::from("id,name\n");
    for i in 1..=rows {
        text.push_str(&format!("{i},name {i}\n"));
    }
    std::fs::write(dir.path().join("exports/big.csv"), text).unwrap();
    rusqlite::Connection::open(dir.path().join("copy.db"))
        .unwrap()
        .execute_batch("CREATE TABLE big (id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    std::fs::write(
        dir.path().join("syncline.toml"),
        r#"[state]
path = "state.db"
[systems.export]
kind = "csv"
dir = "exports"
types = { id = "integer" }
[systems.copy]
kind = "sqlite"
path = "copy.db"
[links.big]
left = "export.big"
right = "copy.big"
[links.big.fields]
id = {}
name = {}
"#,
    )
    .unwrap();
    let link = run(dir.path());
    assert_eq!(link["to_right"]["created"].as_u64(), Some(rows), "{link}");
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg(assert_cmd::cargo::cargo_bin("syncline"))
        .args(["run", "--json"])
        .current_dir(dir.path())
        .output()
        .ok()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(wrote(&report["links"][0]), 0);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
}

/// A key that repeats in a file: the first line's record syncs, the later one is
/// quarantined naming its line.
#[test]
fn a_key_that_repeats_in_a_file_is_quarantined_at_its_later_line() {
    let dir = setup(CSV);
    std::fs::write(
        dir.path().join("exports/contacts.csv"),
        "id,name,email,amount\n1,Ann,ann@x.com,10.5\n2,Bob,bob@x.com,3\n3,\"Cy, Jr.\",cy@x.com,\n2,Bobby,bobby@x.com,4\n",
    )
    .unwrap();
    let link = run(dir.path());
    assert_eq!(link["quarantined"], 1, "{link}");
    let listed = syncline(dir.path())
        .args(["quarantine", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("line 5: key 2 repeats one an earlier line holds"),
        "{listed}"
    );
}
