//! End-to-end: the `syncline` binary as a user runs it — every command, every exit code,
//! every class of config error.

mod support;

use predicates::prelude::*;
use support::{Fixture, syncline};

const LEFT: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT);
    INSERT INTO contacts (email, name, notes) VALUES ('a@x.org', 'Ann', 'n'), ('b@x.org', 'Bob', 'n'), ('c@x.org', 'Cy', 'n');";
const RIGHT: &str = "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, full_name TEXT, notes TEXT, crm_id TEXT);";
const LINK: &str = r#"[links.contacts]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "cid"
mode = "two-way"
match_on = ["email"]
right_ref = "crm_id"
on_delete = { left = "propagate", right = "propagate" }

[links.contacts.fields]
email = { owner = "left" }
name  = { right = "full_name", owner = "left" }
notes = { owner = "both", conflict = "manual" }
"#;

fn fixture() -> Fixture {
    Fixture::new(LEFT, RIGHT, LINK)
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn check_states_the_shape_and_passes_a_good_config() {
    let f = fixture();
    syncline(f.path())
        .arg("check")
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "hybrid: 2 fields left→right, 1 field both ways",
        ))
        .stdout(predicate::str::contains("0 error(s)"));
    let out = syncline(f.path())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&out.stdout)["findings"][0]["rule"], "shape");
}

#[test]
fn check_flags_the_design_questions() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        r#"[links.l]
left = "crm.contacts"
right = "billing.customers"
left_key = "id"
right_key = "cid"
mode = "one-way"

[links.l.fields]
email = {}
notes = { owner = "both", conflict = "newest" }
"#,
    );
    let out = syncline(f.path()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for rule in [
        "one-way-writes-back",
        "newest-without-clock",
        "create-identity",
    ] {
        assert!(text.contains(rule), "missing {rule}: {text}");
    }
    // The error points at the field's policy, wherever the fixture put the line (a
    // PostgreSQL state store adds lines above it).
    let config = std::fs::read_to_string(f.config_path()).unwrap();
    let line = 1 + config
        .lines()
        .position(|l| l.starts_with("notes = "))
        .unwrap();
    let expected = format!("syncline.toml:{line}:9: error [newest-without-clock]");
    assert!(text.contains(&expected), "{expected} in {text}");
}

#[test]
fn run_plan_status_log_explain_and_exit_codes() {
    let f = fixture();
    // plan: what would happen, nothing written, exit 0
    let out = syncline(f.path())
        .args(["plan", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let plan = json(&out.stdout);
    assert_eq!(plan["links"][0]["to_right"]["created"], 3);
    assert!(!f.path().join(".syncline").exists());

    // run: creates, exit 0; a second run: nothing
    syncline(f.path())
        .arg("run")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("left → right wrote: 3 created"));
    let out = syncline(f.path()).args(["run", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out.stdout)["links"][0]["unchanged"], 3);

    // a conflict: exit 3, listed, resolved, written, exit 0
    f.left
        .execute(
            "UPDATE contacts SET notes = 'left says' WHERE email = 'a@x.org'",
            [],
        )
        .unwrap();
    f.right
        .execute(
            "UPDATE customers SET notes = 'right says' WHERE email = 'a@x.org'",
            [],
        )
        .unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(3)
        .stdout(predicate::str::contains("conflicts 1"));
    let out = syncline(f.path())
        .args(["conflicts", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let c = json(&out.stdout);
    assert_eq!(c["conflicts"][0]["left"][0], "left says");
    syncline(f.path())
        .args(["status"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("1 open conflicts"));
    syncline(f.path())
        .args([
            "conflicts",
            "resolve",
            "contacts",
            "left:1",
            "notes",
            "--take",
            "right",
        ])
        .assert()
        .code(0);
    syncline(f.path())
        .arg("run")
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "right → left wrote: 0 created, 1 updated",
        ));
    assert_eq!(
        support::Fixture::rows(&f.left, "SELECT notes FROM contacts WHERE id = 1")[0][0],
        support::text("right says")
    );

    // log and explain show where the value came from
    let out = syncline(f.path())
        .args(["log", "--link", "contacts", "--key", "1", "--json"])
        .output()
        .unwrap();
    let log = json(&out.stdout);
    assert_eq!(log["journal"][0]["reason"], "resolved by a person");
    assert_eq!(log["journal"][0]["status"], "applied");
    let out = syncline(f.path())
        .args(["explain", "contacts", "left:1", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let x = json(&out.stdout);
    let notes = x["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "notes")
        .unwrap()
        .clone();
    assert_eq!(notes["left"], "right says");
    assert_eq!(notes["state"], "in sync");
    assert_eq!(notes["last_write"]["reason"], "resolved by a person");
    syncline(f.path())
        .args(["explain", "contacts", "right:1"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("left:1 ⇄ right:1"));
    syncline(f.path())
        .args(["explain", "contacts", "left:999"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no record left:999"));
    syncline(f.path())
        .args(["status", "--json"])
        .assert()
        .code(0);
}

#[test]
fn a_mass_delete_is_refused_with_exit_4() {
    let f = fixture();
    syncline(f.path()).arg("run").assert().code(0);
    f.left.execute("DELETE FROM contacts", []).unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(4)
        .stdout(predicate::str::contains("max_delete_fraction"));
    assert_eq!(
        support::Fixture::rows(&f.right, "SELECT count(*) FROM customers")[0][0],
        syncline::model::Value::Integer(3)
    );
    syncline(f.path())
        .args(["run", "--allow-mass-delete"])
        .assert()
        .code(0);
    // Overridden once, the deletes propagate; the next run needs no override.
    assert_eq!(
        support::Fixture::rows(&f.right, "SELECT count(*) FROM customers")[0][0],
        syncline::model::Value::Integer(0)
    );
    syncline(f.path()).arg("run").assert().code(0);
}

#[test]
fn quarantine_is_listed_with_exit_3() {
    let f = fixture();
    f.right
        .execute(
            "INSERT INTO customers (email) VALUES ('A@x.org'), ('a@X.org')",
            [],
        )
        .unwrap();
    syncline(f.path()).arg("run").assert().code(3);
    syncline(f.path())
        .args(["quarantine", "list"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("ambiguous_match"));
}

fn config_error(config: &str, expect: &[&str]) {
    let f = fixture();
    std::fs::write(f.config_path(), config).unwrap();
    let out = syncline(f.path()).arg("plan").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
}

#[test]
fn malformed_toml_names_file_line_and_column() {
    config_error(
        "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\n",
        &["syncline.toml:3:", "string"],
    );
}

#[test]
fn unknown_system_kind_is_named() {
    config_error(
        "[systems.crm]\nkind = \"oracle\"\npath = \"x\"\n",
        &["syncline.toml:2:8", "unknown kind `oracle`", "sqlite"],
    );
}

#[test]
fn a_change_feed_or_watch_setting_that_cannot_work_is_named_at_its_line() {
    let with = |tail: &str| {
        format!(
            "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n{LINK}\n{tail}\n"
        )
    };
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases = [
        (
            "[links.contacts.changes]\nleft = { feed = \"logical\" }",
            "left = {",
            "`crm` is not a postgres system",
        ),
        (
            "[links.contacts.changes]\nleft = { feed = \"binlog\" }",
            "left = {",
            "feed `binlog` is not known",
        ),
        (
            "[links.contacts.changes]\nleft = { feed = \"logical\", slot = \"Bad-Name\" }",
            "left = {",
            "`Bad-Name` is not a replication slot or publication name",
        ),
        (
            "[links.contacts.changes]\nleft = { lookback = \"5s\" }",
            "left = {",
            "names a `cursor` column or a `feed",
        ),
        (
            "[watch]\nlisten = \"localhost\"",
            "listen",
            "[watch] listen `localhost`",
        ),
        (
            "[watch]\nadmin_token = \"short\"",
            "admin_token",
            "shorter than 16 characters",
        ),
        ("[watch]\nevery = \"soon\"", "every", "[watch] every `soon`"),
        (
            "[watch]\nmax_feed_changes = 0",
            "max_feed_changes",
            "between 1 and 10000000",
        ),
    ];
    for (tail, at, message) in cases {
        let text = with(tail);
        config_error(
            &text,
            &[&format!("syncline.toml:{}:", line_of(&text, at)), message],
        );
    }
}

#[test]
fn a_changes_block_that_cannot_work_is_named_at_its_line() {
    let with = |changes: &str| {
        format!(
            "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n{LINK}\n[links.contacts.changes]\n{changes}\n"
        )
    };
    let line = |changes: &str| {
        // The line of the changes block's first key.
        let text = with(changes);
        text.lines()
            .position(|l| l.starts_with("[links.contacts.changes]"))
            .unwrap()
            + 2
    };
    let c = "reconcile = \"sometimes\"";
    config_error(
        &with(c),
        &[
            &format!("syncline.toml:{}:", line(c)),
            "reconcile `sometimes` is not full or digests",
        ],
    );
    let c = "left = { cursor = \"id\", lookback = \"5 weeks\" }";
    config_error(
        &with(c),
        &[&format!("syncline.toml:{}:", line(c)), "lookback `5 weeks`"],
    );
    let c = "full_every = 3";
    config_error(&with(c), &["names a cursor for `left`, `right` or both"]);
    let c = "range_size = 1\nreconcile = \"digests\"";
    config_error(
        &with(c),
        &[
            &format!("syncline.toml:{}:", line(c)),
            "range_size must be between 2",
        ],
    );
    // A cursor column the table does not have is named with its line and the columns.
    let c = "left = { cursor = \"modified\" }";
    config_error(
        &with(c),
        &[
            &format!("syncline.toml:{}:", line(c)),
            "changes cursor names column `modified`",
            "columns: id, email",
        ],
    );
}

#[test]
fn each_kind_reads_its_own_settings_with_their_lines() {
    // A server kind takes `url`: `path` is named at its own line, with what it expects.
    config_error(
        "[systems.crm]\nkind = \"postgres\"\npath = \"left.db\"\n",
        &[
            "syncline.toml:3:1",
            "(postgres)",
            "unknown field `path`",
            "`url`",
        ],
    );
    // A setting the kind needs is asked for in the form it is written.
    config_error(
        "[systems.crm]\nkind = \"mysql\"\n",
        &["syncline.toml:1:1", "system `crm` (mysql) needs `url = "],
    );
    // Key order does not matter, inline tables included.
    config_error(
        "[systems]\ncrm = { path = \"a.db\", kind = \"sqlite\", extra = 1 }\n",
        &["syncline.toml:2:", "unknown field `extra`"],
    );
    // A file system is a folder: `path` is another kind's key, named with the right ones.
    config_error(
        "[systems.crm]\nkind = \"csv\"\npath = \"x.csv\"\n",
        &[
            "syncline.toml:3:1",
            "system `crm` (csv): unknown field `path`",
            "expected one of `dir`",
        ],
    );
    config_error(
        "[systems.desk]\nkind = \"http\"\nbase_url = \"http://x\"\n[systems.desk.collections.c]\npath = \"/c\"\npagination = { page = \"p\", next = \"/n\" }\n",
        &["syncline.toml:4:", "collection `c`: pagination is one of"],
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_named() {
    config_error(
        "[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\npaht = 1\n",
        &["syncline.toml:4:1", "paht"],
    );
    config_error(
        &LINK.replace("max_delete", "x").replace(
            "mode = \"two-way\"",
            "mode = \"two-way\"\nmax_delete_fraction = \"lots\"",
        ),
        &["syncline.toml:", "max_delete_fraction"],
    );
}

#[test]
fn a_column_that_does_not_exist_is_named_with_its_line() {
    let f = fixture();
    std::fs::write(
        f.config_path(),
        format!("[systems.crm]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n{}", LINK.replace("right = \"full_name\"", "right = \"fullname\"")),
    )
    .unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("syncline.toml:19:9: link `contacts`: field `name` names column `fullname`, which does not exist in billing.customers"));
}

#[test]
fn a_missing_env_var_and_a_missing_config_file_are_config_errors() {
    config_error(
        "[systems.crm]\nkind = \"sqlite\"\npath = \"${SYNCLINE_TEST_NOT_SET}/x.db\"\n",
        &["syncline.toml:3:8", "SYNCLINE_TEST_NOT_SET"],
    );
    let dir = tempfile::tempdir().unwrap();
    syncline(dir.path())
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "syncline.toml: cannot read config file",
        ));
}

#[test]
fn env_vars_are_substituted() {
    let f = fixture();
    std::fs::write(
        f.config_path(),
        format!("[systems.crm]\nkind = \"sqlite\"\npath = \"${{CRM_DB}}\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n{LINK}"),
    )
    .unwrap();
    // The variable names the left database: its three contacts reach billing.
    std::fs::rename(f.path().join("left.db"), f.path().join("crm-from-env.db")).unwrap();
    syncline(f.path())
        .env("CRM_DB", "crm-from-env.db")
        .arg("run")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("left → right wrote: 3 created"));
    assert_eq!(
        support::Fixture::rows(&f.right, "SELECT email FROM customers ORDER BY email"),
        ["a@x.org", "b@x.org", "c@x.org"]
            .map(|e| vec![support::text(e)])
            .to_vec()
    );
}

#[test]
fn an_unreadable_database_is_a_failure_with_exit_1() {
    let f = fixture();
    std::fs::write(
        f.path().join("right.db"),
        b"this is not a database, it is a text file of some length............",
    )
    .unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("system `billing`"));
    std::fs::remove_file(f.path().join("right.db")).unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"));
    assert!(
        !f.path().join("right.db").exists(),
        "a missing database must not be created"
    );
}

#[test]
fn demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    // The demo succeeds when it shows what it set out to show: exit 0, although the
    // conflict and the duplicate it made on purpose wait for a person.
    syncline(dir.path())
        .args(["demo", "--dir", "d", "--contacts", "300"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "a third run right after writes nothing",
        ));
    let demo = dir.path().join("d");
    syncline(&demo)
        .args(["conflicts", "list"])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("notes"));
    // The second cycle wrote exactly the edits made between the cycles (defaults the
    // billing filled on create came back in the first), and the third nothing.
    let journal = |run: &str| -> Vec<(String, String)> {
        let out = syncline(&demo)
            .args(["--json", "log", "--run", run, "--limit", "10000"])
            .output()
            .unwrap();
        json(&out.stdout)["journal"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    format!(
                        "{}:{}",
                        e["side"].as_str().unwrap(),
                        e["left_key"].as_str().unwrap_or("")
                    ),
                    e["field"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let mut second = journal("2");
    second.sort();
    let expected: Vec<(String, String)> = [
        ("left:3", "status"),
        ("left:4", "phone"),
        ("left:5", "city"),
        ("left:5", "street"),
        ("left:5", "zip"),
        ("right:1", "name"),
    ]
    .iter()
    .map(|(k, f)| (k.to_string(), f.to_string()))
    .collect();
    assert_eq!(second, expected);
    assert_eq!(journal("3"), Vec::new());
    // a second demo in the same folder starts over
    syncline(dir.path())
        .args(["demo", "--dir", "d", "--contacts", "300"])
        .assert()
        .code(0);
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    let dir = tempfile::tempdir().unwrap();
    syncline(dir.path())
        .args(["demo", "--dir", "d", "--contacts", "3000"])
        .assert()
        .code(0);
    // `syncline log | head -1`: far more than a pipe holds: the reader goes away after one line.
    let bin = assert_cmd::cargo::cargo_bin("syncline");
    let mut child = std::process::Command::new(bin)
        .current_dir(dir.path().join("d"))
        .args(["log", "--limit", "1000000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "a closed stdout printed: {stderr}");
}

#[test]
fn init_proposes_a_config_that_checks_and_runs() {
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE, name TEXT, notes TEXT);
         INSERT INTO contacts (email, name) VALUES ('a@x.org', 'Ann'), ('b@x.org', 'Bob');",
        "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE, name TEXT, plan TEXT);
         INSERT INTO customers (email, name) VALUES ('B@x.org', 'Bob');",
        "",
    );
    std::fs::remove_file(f.config_path()).unwrap();
    let out = syncline(f.path())
        .args([
            "init",
            "sqlite:left.db#contacts",
            "sqlite:right.db#customers",
            "--link",
            "contacts",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("match_on = [\"email\"]") && text.contains("right_key = \"cid\""),
        "{text}"
    );
    assert!(
        !f.config_path().exists(),
        "without --write nothing is written"
    );
    syncline(f.path())
        .args([
            "init",
            "sqlite:left.db#contacts",
            "sqlite:right.db#customers",
            "--write",
        ])
        .assert()
        .code(0);
    syncline(f.path()).arg("check").assert().code(0);
    syncline(f.path())
        .arg("run")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("1 created"));
    // never over an existing config
    syncline(f.path())
        .args([
            "init",
            "sqlite:left.db#contacts",
            "sqlite:right.db#customers",
            "--write",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not overwriting"));
    syncline(f.path())
        .args(["init", "oracle:x#t", "sqlite:right.db#customers"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("oracle"));
}

#[test]
fn connection_secrets_never_reach_the_output() {
    let f = fixture();
    for (kind, url) in [
        ("postgres", "postgres://root:hunter2secret@127.0.0.1:1/db"),
        ("mysql", "mysql://root:hunter2secret@127.0.0.1:1/db"),
        (
            "mysql",
            "mysql://root:hunter2secret@127.0.0.1:1/db?bogus_option=1",
        ),
    ] {
        std::fs::write(
            f.config_path(),
            format!("[systems.crm]\nkind = \"{kind}\"\nurl = \"${{CRM_URL}}\"\n[systems.billing]\nkind = \"sqlite\"\npath = \"right.db\"\n{LINK}"),
        )
        .unwrap();
        for args in [
            vec!["run"],
            vec!["run", "--json"],
            vec!["check", "--json"],
            vec!["plan"],
        ] {
            let out = syncline(f.path())
                .env("CRM_URL", url)
                .env("SYNCLINE_LOG", "debug")
                .args(&args)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !all.contains("hunter2secret"),
                "{kind} {args:?} printed the password: {all}"
            );
            assert!(out.status.code() != Some(0), "{all}");
        }
    }
}

#[test]
fn an_empty_or_foreign_file_is_never_taken_for_a_new_state_store() {
    let f = fixture();
    syncline(f.path()).arg("run").assert().code(0);
    let store = f.path().join(".syncline/state.db");
    // GIVEN the store's file was truncated to nothing (a failed copy, a full disk)
    for sidecar in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{sidecar}", store.display()));
    }
    std::fs::write(&store, b"").unwrap();
    // WHEN any command opens it THEN it is refused, naming the file, and left as it was
    for args in [&["run"][..], &["plan"], &["status"]] {
        syncline(f.path())
            .args(args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(
                "state.db is not a syncline state store: the file is empty",
            ));
    }
    assert_eq!(std::fs::metadata(&store).unwrap().len(), 0);
    // GIVEN the store path points at someone's database THEN its tables are not touched
    std::fs::remove_file(&store).unwrap();
    std::fs::copy(f.path().join("left.db"), &store).unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("tables of its own"));
    let tables = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row(
            "SELECT group_concat(name) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    assert!(!tables.contains("pairs"), "{tables}");
    // AND with no file at all, a new store is made and records are re-linked
    std::fs::remove_file(&store).unwrap();
    syncline(f.path()).arg("run").assert().code(0);
}

#[test]
fn creates_that_cannot_succeed_are_refused_before_anything_is_written() {
    // GIVEN a one-way link into a table whose key has no default and gets no field
    let left = "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT);
        INSERT INTO contacts VALUES (1, 'a@x.org', 'Ann'), (2, 'b@x.org', 'Bob');";
    let right = "CREATE TABLE customers (code TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT, region TEXT NOT NULL DEFAULT 'eu');";
    let link = |fields: &str| {
        format!(
            "[links.c]\nleft = \"crm.contacts\"\nright = \"billing.customers\"\nleft_key = \"id\"\nright_key = \"code\"\nmode = \"one-way\"\n\n[links.c.fields]\nemail = {{}}\nname = {{}}\n{fields}"
        )
    };
    let f = Fixture::new(left, right, &link(""));
    // WHEN checked THEN it is an error naming the column and the fix, exit 2
    syncline(f.path())
        .arg("check")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "every create on the right would be refused: `code` of billing.customers is a key with no default and no field fills it; carry the left key with `id = { right = \"code\" }`",
        ));
    // AND a run refuses too, before writing anything
    syncline(f.path())
        .arg("run")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "every create on the right would be refused",
        ));
    assert_eq!(
        Fixture::rows(&f.right, "SELECT count(*) FROM customers"),
        vec![vec![syncline::model::Value::Integer(0)]]
    );
    // GIVEN a NOT NULL column without a default that no field fills THEN it is named
    f.right
        .execute_batch("ALTER TABLE customers ADD COLUMN tier TEXT NOT NULL DEFAULT 'x'; CREATE TABLE t2 (code TEXT PRIMARY KEY, email TEXT NOT NULL, name TEXT, tier TEXT NOT NULL);")
        .unwrap();
    f.write_config(&link("id = { right = \"code\" }").replace("billing.customers", "billing.t2"));
    syncline(f.path())
        .arg("check")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "`tier` of billing.t2 is NOT NULL with no default",
        ));
    // WHEN the key is carried THEN the link checks clean (the carried key is the create
    // identity: no create-identity warning) and runs, keys as on the left
    f.write_config(&link("id = { right = \"code\" }"));
    syncline(f.path())
        .arg("check")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("0 error(s)"));
    syncline(f.path()).arg("run").assert().code(0);
    assert_eq!(
        Fixture::rows(&f.right, "SELECT code, email FROM customers ORDER BY code"),
        vec![
            vec![support::text("1"), support::text("a@x.org")],
            vec![support::text("2"), support::text("b@x.org")]
        ]
    );
    let out = syncline(f.path()).args(["run", "--json"]).output().unwrap();
    assert_eq!(json(&out.stdout)["links"][0]["unchanged"], 2);
}

#[test]
fn a_system_pointed_at_another_database_is_refused_until_relinked_on_purpose() {
    let f = fixture();
    syncline(f.path()).arg("run").assert().code(0);
    // GIVEN billing is pointed at a restored copy of its database, at another path, in
    // which one customer was edited and one removed
    std::fs::copy(f.path().join("right.db"), f.path().join("restored.db")).unwrap();
    let restored = rusqlite::Connection::open(f.path().join("restored.db")).unwrap();
    restored
        .execute_batch("UPDATE customers SET notes = 'restored' WHERE email = 'a@x.org'; DELETE FROM customers WHERE email = 'c@x.org';")
        .unwrap();
    let config = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        config.replace("path = \"right.db\"", "path = \"restored.db\""),
    )
    .unwrap();
    let snapshot =
        |c: &rusqlite::Connection| Fixture::rows(c, "SELECT * FROM customers ORDER BY cid");
    let before = snapshot(&restored);
    // WHEN run or planned THEN the link is refused (exit 4), saying what changed and how
    // to start over, and nothing is written anywhere
    for command in ["plan", "run"] {
        syncline(f.path())
            .arg(command)
            .assert()
            .code(4)
            .stdout(predicate::str::contains(
                "its pairs were made with other systems: the right was sqlite file",
            ))
            .stdout(predicate::str::contains("restored.db"))
            .stdout(predicate::str::contains(
                "syncline run --link contacts --relink",
            ));
    }
    assert_eq!(snapshot(&restored), before);
    assert_eq!(
        Fixture::rows(&f.left, "SELECT count(*) FROM contacts"),
        vec![vec![syncline::model::Value::Integer(3)]]
    );
    // WHEN started over on purpose THEN records are paired again by match_on: the one the
    // copy lacks is created, the edited one is decided as on a first link, nothing twice
    syncline(f.path())
        .args(["run", "--relink"])
        .assert()
        .stdout(predicate::str::contains("re-linked from scratch"));
    assert_eq!(
        Fixture::rows(&restored, "SELECT email FROM customers ORDER BY email"),
        ["a@x.org", "b@x.org", "c@x.org"]
            .map(|e| vec![support::text(e)])
            .to_vec()
    );
    let out = syncline(f.path()).args(["run", "--json"]).output().unwrap();
    let report = json(&out.stdout);
    assert_eq!(report["links"][0]["to_right"]["created"], 0, "{report}");
    assert_eq!(report["links"][0]["refused"], serde_json::Value::Null);
}

#[test]
fn a_composite_key_is_carried_or_refused_never_left_stuck() {
    // GIVEN a composite key `a, b` on both sides, and a link that maps only other fields
    let left =
        "CREATE TABLE l (a INTEGER NOT NULL, b TEXT NOT NULL, note TEXT, PRIMARY KEY (a, b));
        INSERT INTO l VALUES (1, 'x', 'one'), (1, 'y', 'two'), (2, 'x', 'three');";
    let right =
        "CREATE TABLE r (a INTEGER NOT NULL, b TEXT NOT NULL, note TEXT, PRIMARY KEY (a, b));";
    let link = |fields: &str| {
        format!(
            "[links.k]\nleft = \"crm.l\"\nright = \"billing.r\"\nleft_key = \"a, b\"\nright_key = \"a, b\"\nmode = \"one-way\"\non_delete = {{ left = \"propagate\" }}\n\n[links.k.fields]\nnote = {{}}\n{fields}"
        )
    };
    let f = Fixture::new(left, right, &link(""));
    // THEN check and run refuse, naming both key columns and the fix; nothing is written
    // (it once created rows with a and b NULL, then failed every run on the id map)
    syncline(f.path())
        .arg("check")
        .assert()
        .code(2)
        .stdout(predicate::str::contains(
            "`a`, `b` of billing.r are NOT NULL or keys with no default and no field fills them; carry the left key with `a = {}`, `b = {}`",
        ));
    syncline(f.path()).arg("run").assert().code(2);
    assert_eq!(
        Fixture::rows(&f.right, "SELECT count(*) FROM r"),
        vec![vec![syncline::model::Value::Integer(0)]]
    );
    // WHEN the key is carried THEN every record is created with its key, and the next
    // run writes nothing
    f.write_config(&link("a = {}\nb = {}\n"));
    syncline(f.path()).arg("run").assert().code(0);
    assert_eq!(
        Fixture::rows(&f.right, "SELECT a || b || note FROM r ORDER BY a, b"),
        ["1xone", "1ytwo", "2xthree"]
            .map(|t| vec![support::text(t)])
            .to_vec()
    );
    let out = syncline(f.path()).args(["run", "--json"]).output().unwrap();
    let report = json(&out.stdout);
    assert_eq!(report["links"][0]["unchanged"], 3, "{report}");
}

#[test]
fn a_run_says_when_a_crash_could_duplicate_records() {
    // GIVEN a link with no create identity at all (no match_on, no ref, key not carried)
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &LINK
            .replace("match_on = [\"email\"]\n", "")
            .replace("right_ref = \"crm_id\"\n", ""),
    );
    // THEN run (not only check) says so
    let out = syncline(f.path()).args(["run", "--json"]).output().unwrap();
    let report = json(&out.stdout);
    let warnings = report["links"][0]["warnings"].to_string();
    assert!(
        warnings.contains("no create identity") && warnings.contains("made twice"),
        "{warnings}"
    );
}

#[test]
fn an_error_about_a_corrupt_store_names_its_file() {
    let f = fixture();
    syncline(f.path()).arg("run").assert().code(0);
    let store = f.path().join(".syncline/state.db");
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute("UPDATE pairs SET base = 'not a base'", [])
        .unwrap();
    syncline(f.path())
        .arg("run")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: in .syncline/state.db: state store: corrupt state row: base of",
        ));
}

#[test]
fn verify_compares_both_sides_and_names_what_differs_writing_nothing() {
    let f = fixture();
    syncline(f.path()).arg("run").assert().code(0);
    syncline(f.path())
        .arg("verify")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("3 pairs compared: in step"));
    // Out of band: a name changed on the right, a record gone from it, one added to it.
    f.right
        .execute(
            "UPDATE customers SET full_name = 'Robert' WHERE email = 'b@x.org'",
            [],
        )
        .unwrap();
    f.right
        .execute("DELETE FROM customers WHERE email = 'c@x.org'", [])
        .unwrap();
    f.right
        .execute(
            "INSERT INTO customers (email, full_name, notes) VALUES ('z@x.org', 'Zed', 'n')",
            [],
        )
        .unwrap();
    let before = f.state_snapshot();
    let out = syncline(f.path()).arg("verify").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("name: 1 record(s) differ"), "{text}");
    assert!(
        text.contains("\"Bob\"  ≠  right:") && text.contains("\"Robert\""),
        "{text}"
    );
    assert!(
        text.contains("only on the left: 1 record(s) (left:3)"),
        "{text}"
    );
    assert!(text.contains("only on the right: 1 record(s)"), "{text}");
    let out = syncline(f.path())
        .args(["verify", "--json"])
        .output()
        .unwrap();
    let report = json(&out.stdout);
    assert_eq!(report["links"][0]["fields"]["name"]["records"], 1);
    assert_eq!(report["links"][0]["only_left"]["first"][0]["left_key"], "3");
    // Nothing written: the systems and the store are as they were.
    assert_eq!(f.state_snapshot(), before);
    let names: i64 = f
        .right
        .query_row(
            "SELECT COUNT(*) FROM customers WHERE full_name = 'Robert'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(names, 1);
}

/// A `run` on a terminal shows its progress; piped, or with `--json`, it does not.
#[test]
fn a_run_on_a_terminal_shows_progress_and_a_piped_one_does_not() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: `script` (util-linux) runs a command on a terminal for this test");
        return;
    }
    let f = support::Fixture::new(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO people VALUES (1, 'Ada'), (2, 'Grace');",
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);",
        "[links.people]\nleft = \"crm.people\"\nright = \"billing.people\"\n\n[links.people.fields]\nid = {}\nname = {}\n",
    );
    let bin = assert_cmd::cargo::cargo_bin("syncline");
    let on_terminal = std::process::Command::new("script")
        .current_dir(f.path())
        .args(["-qec", &format!("{} run", bin.display()), "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("people: read"), "{shown}");
    let piped = support::syncline(f.path()).arg("run").output().unwrap();
    let text = String::from_utf8_lossy(&piped.stdout).to_string()
        + &String::from_utf8_lossy(&piped.stderr);
    assert!(!text.contains("records/s"), "{text}");
}

/// `--log-format json`: one JSON object per line, with the run's and the link's spans,
/// counts and no record values.
#[test]
fn logs_are_json_lines_with_the_run_and_link_spans() {
    let f = support::Fixture::new(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO people VALUES (1, 'Ada Lovelace');",
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);",
        "[links.people]\nleft = \"crm.people\"\nright = \"billing.people\"\n\n[links.people.fields]\nid = {}\nname = {}\n",
    );
    let out = support::syncline(f.path())
        .args(["--log-format", "json", "run"])
        .env("SYNCLINE_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|l| l["message"] == "link done")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(done["span"]["link"], "people", "{done}");
    assert_eq!(done["written_right"], 1, "{done}");
    assert!(!stderr.contains("Lovelace"), "{stderr}");
}
