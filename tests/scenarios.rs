//! One test per rule of DESIGN.md that random edits do not reach on their own:
//! drift, flapping, delete rules and the valve, delete-vs-edit, stale writes, a lost
//! state store, field groups, manual conflicts, clocks, constraint violations.

mod support;

use support::{Fixture, text, writes};
use syncline::engine::RunOptions;
use syncline::model::Value;
use syncline::state::QuarantineKind;

const LEFT: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT,
    street TEXT, city TEXT, updated_at INTEGER);";
const RIGHT: &str = "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT,
    street TEXT, city TEXT, modified_at INTEGER, deleted INTEGER NOT NULL DEFAULT 0, crm_id TEXT);";

fn link(extra: &str, fields: &str) -> String {
    format!(
        "[links.c]\nleft = \"crm.contacts\"\nright = \"billing.customers\"\nleft_key = \"id\"\nright_key = \"cid\"\nmatch_on = [\"email\"]\nright_ref = \"crm_id\"\n{extra}\n\n[links.c.fields]\n{fields}\n"
    )
}

const TWO_WAY_FIELDS: &str = "email = { owner = \"left\" }\nname = { owner = \"left\" }\nnotes = { owner = \"both\", conflict = \"manual\" }";

fn seed_left(f: &Fixture, n: usize) {
    for i in 0..n {
        f.left
            .execute(
                "INSERT INTO contacts (email, name, notes) VALUES (?1, ?2, 'n')",
                rusqlite::params![format!("p{i}@x.org"), format!("P{i}")],
            )
            .unwrap();
    }
}

/// Runs up to `runs` times, `before` and `after` each run (given its number), until a run
/// quarantines something and writes nothing: the field was frozen. Returns that run.
fn run_until_frozen(
    f: &Fixture,
    runs: u32,
    before: impl Fn(u32),
    after: impl Fn(u32),
) -> Option<u32> {
    (1..=runs).find(|&run| {
        before(run);
        let r = f.run();
        after(run);
        r.links[0].quarantined > 0 && writes(&r) == 0
    })
}

/// `syncline run` in the fixture's folder as a process of its own, with `SYNCLINE_FAULT`
/// set to `fault` if given.
fn spawn_run(f: &Fixture, fault: Option<&str>) -> std::process::Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("syncline"));
    cmd.arg("run")
        .current_dir(f.path())
        .env_remove("SYNCLINE_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(spec) = fault {
        cmd.env("SYNCLINE_FAULT", spec);
    }
    cmd.spawn().unwrap()
}

/// The right holds each of the `n` seeded contacts exactly once, and a run writes nothing.
fn each_created_once(f: &Fixture, n: i64) {
    assert_eq!(count(&f.right, "customers"), n);
    assert_eq!(count(&f.right, "(SELECT DISTINCT email FROM customers)"), n);
    assert_eq!(writes(&f.run()), 0);
}

fn right_names(f: &Fixture) -> Vec<Vec<Value>> {
    Fixture::rows(
        &f.right,
        "SELECT email, name, notes FROM customers ORDER BY email",
    )
}

#[test]
fn one_way_drift_is_corrected_or_only_reported() {
    // GIVEN a one-way link that has synced once
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"one-way\"\non_delete = { left = \"propagate\" }",
            "email = {}\nname = {}",
        ),
    );
    seed_left(&f, 3);
    assert_eq!(f.run().links[0].to_right.created, 3);
    // WHEN someone edits a left-owned field on the receiving side
    f.right
        .execute(
            "UPDATE customers SET name = 'hacked' WHERE email = 'p1@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    // THEN the run puts the owner's value back and says why
    assert_eq!(r.links[0].to_right.updated, 1);
    assert_eq!(
        r.links[0].planned[0].reason,
        "drift correction (owner's value restored)"
    );
    assert_eq!(right_names(&f)[1][1], text("P1"));

    // GIVEN on_drift = "report" WHEN the same drift happens THEN it is counted, not written
    f.write_config(&link(
        "mode = \"one-way\"\non_drift = \"report\"\non_delete = { left = \"propagate\" }",
        "email = {}\nname = {}",
    ));
    f.right
        .execute(
            "UPDATE customers SET name = 'hacked' WHERE email = 'p1@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(writes(&r), 0);
    assert_eq!(r.links[0].drift_reported, 1);
    assert_eq!(right_names(&f)[1][1], text("hacked"));
}

#[test]
fn a_value_a_trigger_rewrites_is_written_once_and_remembered_as_stored() {
    // GIVEN the right side lower-cases names with a trigger: our value never sticks as sent
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nname = {}"),
    );
    f.right
        .execute_batch("CREATE TRIGGER whisper AFTER UPDATE OF name ON customers WHEN new.name <> lower(new.name)
                        BEGIN UPDATE customers SET name = lower(new.name) WHERE cid = new.cid; END;")
        .unwrap();
    seed_left(&f, 2);
    f.run();
    // WHEN the left renames, and every write of 'Q…' is stored as 'q…'
    f.left
        .execute("UPDATE contacts SET name = 'Q' || id", [])
        .unwrap();
    assert_eq!(f.run().links[0].to_right.updated, 2);
    // THEN the right holds its own form, and the next run knows it for an echo: nothing
    // is written again, nothing is quarantined
    assert_eq!(right_names(&f)[0][1], text("q1"));
    for _ in 0..3 {
        let r = f.run();
        assert_eq!((writes(&r), r.links[0].quarantined), (0, 0));
    }
    // AND a real edit on the right is still seen, and corrected (drift)
    f.right
        .execute(
            "UPDATE customers SET name = 'hacked' WHERE email = 'p0@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.updated, 1);
    assert_eq!(right_names(&f)[0][1], text("q1"));
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_field_a_job_keeps_rewriting_between_runs_is_frozen_and_quarantined() {
    // GIVEN a job on the right that lower-cases names between runs: syncline's value is
    // stored, then changed back behind its back, every time
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nname = {}"),
    );
    seed_left(&f, 2);
    f.run();
    let job = |f: &Fixture| {
        f.right
            .execute("UPDATE customers SET name = lower(name)", [])
            .unwrap();
    };
    job(&f);
    let frozen_at = run_until_frozen(&f, 6, |_| {}, |_| job(&f));
    // THEN it is frozen after two bounces, with a reason, and runs go quiet
    assert!(
        frozen_at.is_some_and(|n| n <= 5),
        "never frozen: {frozen_at:?}"
    );
    let mut state = f.store();
    let q = state.quarantine(Some("c")).unwrap();
    assert!(
        q.iter()
            .all(|q| q.kind == QuarantineKind::Flapping && q.reason.contains("keeps bouncing")),
        "{q:?}"
    );
    assert_eq!(q.len(), 2);
    drop(state);
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_field_two_jobs_bounce_across_directions_is_frozen_and_released() {
    // GIVEN a two-way field both own, a job on the left that upper-cases it and one on
    // the right that lower-cases it, each running after the other's value arrived
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\nconflict = \"left-wins\"",
            "email = { owner = \"left\" }\nname = { owner = \"both\" }",
        ),
    );
    seed_left(&f, 1);
    f.run();
    let frozen_at = run_until_frozen(
        &f,
        8,
        |run| {
            if run % 2 == 1 {
                f.left
                    .execute("UPDATE contacts SET name = upper(name)", [])
                    .unwrap();
            } else {
                f.right
                    .execute("UPDATE customers SET name = lower(name)", [])
                    .unwrap();
            }
        },
        |_| {},
    );
    // THEN the alternation A→B there, B→A here is seen as bouncing, not as news forever
    assert!(
        frozen_at.is_some_and(|n| n <= 5),
        "never frozen: {frozen_at:?}"
    );
    let mut state = f.store();
    let q = state.quarantine(Some("c")).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        (q[0].kind.as_str(), q[0].field.as_str()),
        ("flapping", "name")
    );
    drop(state);
    // AND releasing it lets the field sync again
    let key = q[0].key.clone();
    let mut state = f.store();
    state.release_quarantine("c", &key, Some("name")).unwrap();
    drop(state);
    let r = f.run();
    assert_eq!(r.links[0].quarantined, 0);
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn deletes_follow_the_rule_and_the_valve_refuses_mass_deletes() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"one-way\"\non_delete = { left = \"propagate\" }\nmax_delete_fraction = 0.3",
            "email = {}\nname = {}",
        ),
    );
    seed_left(&f, 10);
    f.run();
    // GIVEN 2 of 10 deleted on the left WHEN run THEN they are deleted on the right
    f.left
        .execute("DELETE FROM contacts WHERE id <= 2", [])
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.deleted, 2);
    assert_eq!(right_names(&f).len(), 8);
    // GIVEN most of the left vanishes WHEN run THEN nothing is deleted and the run is refused
    f.left
        .execute("DELETE FROM contacts WHERE id <= 8", [])
        .unwrap();
    let r = f.run();
    assert!(r.refused(), "{:?}", r.links[0]);
    assert!(
        r.links[0]
            .refused
            .as_ref()
            .unwrap()
            .contains("max_delete_fraction")
    );
    assert_eq!(right_names(&f).len(), 8);
    // WHEN a person allows it THEN it goes through
    let r = f.run_with(RunOptions {
        allow_mass_delete: true,
        ..Default::default()
    });
    assert_eq!(r.links[0].to_right.deleted, 6);
}

#[test]
fn soft_delete_ignore_and_hold() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\non_delete = { left = \"soft:deleted=1\", right = \"ignore\" }\nmax_delete_fraction = 1.0",
            TWO_WAY_FIELDS,
        ),
    );
    seed_left(&f, 3);
    f.run();
    // soft: a left delete marks the right record
    f.left
        .execute("DELETE FROM contacts WHERE email = 'p0@x.org'", [])
        .unwrap();
    // ignore: a right delete leaves the left record alone and does not re-create it
    f.right
        .execute("DELETE FROM customers WHERE email = 'p1@x.org'", [])
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.deleted, 1);
    assert_eq!(
        Fixture::rows(
            &f.right,
            "SELECT deleted FROM customers WHERE email = 'p0@x.org'"
        ),
        vec![vec![Value::Integer(1)]]
    );
    assert_eq!(
        Fixture::rows(
            &f.left,
            "SELECT count(*) FROM contacts WHERE email = 'p1@x.org'"
        ),
        vec![vec![Value::Integer(1)]]
    );
    assert_eq!(writes(&f.run()), 0, "tombstoned pairs stay quiet");
    assert_eq!(
        Fixture::rows(
            &f.right,
            "SELECT count(*) FROM customers WHERE email = 'p1@x.org'"
        ),
        vec![vec![Value::Integer(0)]]
    );

    // hold: nothing happens, the survivor is quarantined until a person acts
    f.write_config(&link(
        "mode = \"two-way\"\non_delete = { left = \"hold\", right = \"hold\" }",
        TWO_WAY_FIELDS,
    ));
    f.left
        .execute("DELETE FROM contacts WHERE email = 'p2@x.org'", [])
        .unwrap();
    let r = f.run();
    assert_eq!(writes(&r), 0);
    assert!(r.needs_attention());
    let q = f.store().quarantine(Some("c")).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].kind, QuarantineKind::DeleteHeld);
    // the person deletes it on the right too: the hold clears itself
    f.right
        .execute("DELETE FROM customers WHERE email = 'p2@x.org'", [])
        .unwrap();
    let r = f.run();
    assert!(!r.needs_attention(), "{:?}", r.links[0]);
}

#[test]
fn delete_versus_edit_holds_by_default_and_edit_wins_recreates() {
    let fields = TWO_WAY_FIELDS;
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\non_delete = { left = \"propagate\", right = \"propagate\" }\nmax_delete_fraction = 1.0",
            fields,
        ),
    );
    seed_left(&f, 2);
    f.run();
    // GIVEN deleted on the left and edited on the right since the last run
    f.left
        .execute("DELETE FROM contacts WHERE email = 'p0@x.org'", [])
        .unwrap();
    f.right
        .execute(
            "UPDATE customers SET notes = 'important' WHERE email = 'p0@x.org'",
            [],
        )
        .unwrap();
    // THEN by default nothing is lost: held
    let r = f.run();
    assert_eq!(writes(&r), 0);
    assert!(r.needs_attention());
    assert_eq!(right_names(&f).len(), 2);
    // WHEN the link says edit-wins THEN the left record is re-created from the right
    f.write_config(&link(
        "mode = \"two-way\"\non_delete = { left = \"propagate\", right = \"propagate\" }\ndelete_vs_edit = \"edit-wins\"\nmax_delete_fraction = 1.0",
        fields,
    ));
    let r = f.run();
    assert_eq!(r.links[0].to_left.created, 1);
    assert_eq!(
        Fixture::rows(
            &f.left,
            "SELECT notes FROM contacts WHERE email = 'p0@x.org'"
        ),
        vec![vec![text("important")]]
    );
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_write_never_replaces_a_value_changed_after_it_was_read() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\nconflict = \"left-wins\"",
            "email = { owner = \"left\" }\nnotes = { owner = \"both\" }",
        ),
    );
    seed_left(&f, 1);
    f.run();
    // GIVEN the left changes notes, so the run plans to write them to the right
    f.left
        .execute("UPDATE contacts SET notes = 'from left'", [])
        .unwrap();
    // WHEN someone edits the right between plan and apply
    let right_path = f.path().join("right.db");
    let mut hook = |_: &str| {
        rusqlite::Connection::open(&right_path)
            .unwrap()
            .execute("UPDATE customers SET notes = 'typed meanwhile'", [])
            .unwrap();
    };
    let r = f.run_with(RunOptions {
        between_plan_and_apply: Some(&mut hook),
        ..Default::default()
    });
    // THEN the write is skipped as stale, and the edit survives
    assert_eq!(r.links[0].to_right.stale_skipped, 1);
    assert_eq!(r.links[0].to_right.updated, 0);
    assert_eq!(right_names(&f)[0][2], text("typed meanwhile"));
    // AND the journal says so: the planned write is `stale`, not `applied`
    let journal = f.store().journal(Some("c"), None, None, 100).unwrap();
    let statuses: Vec<(&str, &str)> = journal
        .iter()
        .filter(|e| e.run == journal[0].run)
        .map(|e| (e.op.as_str(), e.status.as_str()))
        .collect();
    assert_eq!(statuses, vec![("update", "stale")], "{journal:?}");
    // AND the next run re-plans it under the policy (left-wins), openly
    let r = f.run();
    assert_eq!(r.links[0].to_right.updated, 1);
    assert_eq!(r.links[0].planned[0].reason, "conflict policy left-wins");
}

#[test]
fn a_lost_state_store_relinks_by_match_on_and_never_creates_or_deletes() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\non_delete = { left = \"propagate\", right = \"propagate\" }",
            TWO_WAY_FIELDS,
        ),
    );
    seed_left(&f, 20);
    f.run();
    // GIVEN the state store is lost and both sides moved on
    f.lose_state();
    f.left
        .execute(
            "UPDATE contacts SET name = 'renamed' WHERE email = 'p1@x.org'",
            [],
        )
        .unwrap();
    f.right
        .execute(
            "UPDATE customers SET notes = 'edited' WHERE email = 'p2@x.org'",
            [],
        )
        .unwrap();
    // WHEN run
    let r = f.run();
    let l = &r.links[0];
    // THEN records are re-linked: nothing created, nothing deleted; the owner rule decides
    // the left-owned name, and the `both` field with no base is held as a conflict
    assert_eq!(
        (
            l.to_left.created,
            l.to_right.created,
            l.to_left.deleted,
            l.to_right.deleted
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(l.to_right.updated, 1);
    assert_eq!(l.conflicts, 1);
    // The same 20 records, each once, every value as the rules say: the left's rename
    // reached the right, the right's note is kept there and not copied left (held).
    let right = right_names(&f);
    let expected: Vec<Vec<Value>> = (0..20)
        .map(|i| format!("p{i}@x.org"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|email| {
            let i: usize = email[1..email.find('@').unwrap()].parse().unwrap();
            let name = if i == 1 {
                "renamed".into()
            } else {
                format!("P{i}")
            };
            let notes = if i == 2 { "edited" } else { "n" };
            vec![text(&email), text(&name), text(notes)]
        })
        .collect();
    assert_eq!(right, expected);
    assert_eq!(
        Fixture::rows(
            &f.left,
            "SELECT notes FROM contacts WHERE email = 'p2@x.org'"
        ),
        vec![vec![text("n")]]
    );
    // And once the conflict is all that is left, nothing more is written.
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_field_group_wins_or_loses_as_one() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &format!(
            "{}\n[links.c.groups]\naddress = [\"street\", \"city\"]\n",
            link(
                "mode = \"two-way\"\nconflict = \"left-wins\"",
                "email = { owner = \"left\" }\nstreet = { owner = \"both\" }\ncity = { owner = \"both\" }"
            )
        ),
    );
    f.left
        .execute(
            "INSERT INTO contacts (email, street, city) VALUES ('a@x.org', '1 Old St', 'Lyon')",
            [],
        )
        .unwrap();
    f.run();
    // GIVEN the left changes the street and the right changes the city
    f.left
        .execute("UPDATE contacts SET street = '2 New St'", [])
        .unwrap();
    f.right
        .execute("UPDATE customers SET city = 'Porto'", [])
        .unwrap();
    f.run();
    // THEN the whole address comes from the winner (left), never half from each side
    let row = Fixture::rows(&f.right, "SELECT street, city FROM customers");
    assert_eq!(row, vec![vec![text("2 New St"), text("Lyon")]]);
    assert_eq!(
        Fixture::rows(&f.left, "SELECT street, city FROM contacts"),
        row
    );
}

#[test]
fn a_manual_conflict_waits_for_a_person_then_the_decision_is_written() {
    let f = Fixture::new(LEFT, RIGHT, &link("mode = \"two-way\"", TWO_WAY_FIELDS));
    seed_left(&f, 1);
    f.run();
    f.left
        .execute("UPDATE contacts SET notes = 'L'", [])
        .unwrap();
    f.right
        .execute("UPDATE customers SET notes = 'R'", [])
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].conflicts, 1);
    assert_eq!(writes(&r), 0);
    assert_eq!(f.run().links[0].conflicts, 1, "still held, not forgotten");
    let mut state = f.store();
    let c = state.conflicts(Some("c")).unwrap().remove(0);
    assert_eq!(
        (c.left_value.clone(), c.right_value.clone()),
        (vec![text("L")], vec![text("R")])
    );
    state
        .resolve_conflict("c", &c.left_key, &c.unit, &[text("R")])
        .unwrap();
    drop(state);
    let r = f.run();
    assert_eq!(r.links[0].to_left.updated, 1);
    assert_eq!(r.links[0].conflicts, 0);
    assert_eq!(
        Fixture::rows(&f.left, "SELECT notes FROM contacts"),
        vec![vec![text("R")]]
    );
    assert!(f.store().conflicts(None).unwrap().is_empty());
}

#[test]
fn newest_uses_clocks_beyond_the_skew_and_holds_ties() {
    let fields = "email = { owner = \"left\" }\nnotes = { owner = \"both\", conflict = \"newest\", clock = { left = \"updated_at\", right = \"modified_at\" } }";
    let f = Fixture::new(LEFT, RIGHT, &link("mode = \"two-way\"", fields));
    f.left
        .execute(
            "INSERT INTO contacts (email, notes, updated_at) VALUES ('a@x.org', 'n', 100)",
            [],
        )
        .unwrap();
    f.run();
    f.left
        .execute("UPDATE contacts SET notes = 'L', updated_at = 1000", [])
        .unwrap();
    f.right
        .execute("UPDATE customers SET notes = 'R', modified_at = 2000", [])
        .unwrap();
    assert_eq!(f.run().links[0].to_left.updated, 1);
    assert_eq!(
        Fixture::rows(&f.left, "SELECT notes FROM contacts"),
        vec![vec![text("R")]]
    );
    // within the 2 s skew: a person decides
    f.left
        .execute("UPDATE contacts SET notes = 'L2', updated_at = 3000", [])
        .unwrap();
    f.right
        .execute("UPDATE customers SET notes = 'R2', modified_at = 3001", [])
        .unwrap();
    let r = f.run();
    assert_eq!((writes(&r), r.links[0].conflicts), (0, 1));
}

#[test]
fn a_record_the_other_side_refuses_is_quarantined_and_the_rest_applied() {
    refused_record_is_quarantined_and_the_rest_applied("");
}

#[test]
fn a_refused_record_in_a_later_batch_is_journaled_rejected_not_applied() {
    // Batches of two: the refused record is in the second batch, which is journaled
    // while the first is committed.
    refused_record_is_quarantined_and_the_rest_applied("\nbatch_size = 2");
}

#[test]
fn a_right_side_the_same_size_but_not_the_same_records_is_still_scanned() {
    // The right scan is skipped only when the right holds exactly the partners the left
    // scan fetched; one record gone and one new keeps the count and must not fool it.
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\non_delete = { right = \"propagate\" }\nmax_delete_fraction = 1.0",
            TWO_WAY_FIELDS,
        ),
    );
    seed_left(&f, 5);
    assert_eq!(f.run().links[0].to_right.created, 5);
    assert_eq!(writes(&f.run()), 0);
    f.right
        .execute_batch(
            "DELETE FROM customers WHERE email = 'p1@x.org';
             INSERT INTO customers (email, name) VALUES ('new@x.org', 'New');",
        )
        .unwrap();
    let r = f.run();
    assert_eq!(
        (r.links[0].to_left.deleted, r.links[0].to_left.created),
        (1, 1)
    );
    let emails: Vec<Vec<Value>> =
        Fixture::rows(&f.left, "SELECT email FROM contacts ORDER BY email");
    assert_eq!(
        emails,
        ["new@x.org", "p0@x.org", "p2@x.org", "p3@x.org", "p4@x.org"].map(|e| vec![text(e)])
    );
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_first_load_whose_system_fails_mid_way_keeps_what_landed_and_resumes_without_duplicates() {
    // Batches of two, written one batch behind the planner; the right system fails the
    // whole fourth batch, p6 and p7 (a trigger that rolls its transaction back).
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"one-way\"\nbatch_size = 2",
            "email = {}\nname = {}",
        ),
    );
    seed_left(&f, 10);
    f.right
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON customers WHEN NEW.email = 'p6@x.org'
             BEGIN SELECT RAISE(ROLLBACK, 'the right system failed'); END;",
        )
        .unwrap();
    let config = f.config();
    let mut state = f.store();
    let failed = syncline::engine::run_cycle(&config, &mut state, RunOptions::default());
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("the right system failed")),
        "{:?}",
        failed.map(|r| r.summary_json())
    );
    drop(state);
    // The three batches before landed and are linked; nothing of the failed one did.
    assert_eq!(
        Fixture::rows(&f.right, "SELECT count(*) FROM customers"),
        vec![vec![Value::Integer(6)]]
    );
    assert_eq!(f.store().pair_count("c").unwrap(), 6);
    // Entries of the failed run that never got an outcome are `unknown`, none `planned`.
    let journal = f.store().journal(Some("c"), None, None, 100).unwrap();
    assert!(journal.iter().all(|e| e.status != "planned"), "{journal:?}");
    assert_eq!(records_with_status(&journal, "applied"), 6, "{journal:?}");
    assert!(journal.iter().any(|e| e.status == "unknown"), "{journal:?}");
    // Fixed, the next run creates the other four, once each.
    f.right.execute_batch("DROP TRIGGER boom").unwrap();
    assert_eq!(f.run().links[0].to_right.created, 4);
    assert_eq!(
        Fixture::rows(
            &f.right,
            "SELECT count(DISTINCT email), count(*) FROM customers"
        ),
        vec![vec![Value::Integer(10), Value::Integer(10)]]
    );
    assert_eq!(writes(&f.run()), 0);
}

/// How many records the journal's entries with `status` stand for: a batch's creates are
/// one entry.
fn records_with_status(journal: &[syncline::state::JournalEntry], status: &str) -> i64 {
    journal
        .iter()
        .filter(|e| e.status == status)
        .map(|e| e.records.unwrap_or(1))
        .sum()
}

fn refused_record_is_quarantined_and_the_rest_applied(link_options: &str) {
    let right = "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT CHECK (length(name) < 10), crm_id TEXT);";
    let f = Fixture::new(
        LEFT,
        right,
        &link(
            &format!("mode = \"one-way\"{link_options}"),
            "email = {}\nname = {}",
        ),
    );
    seed_left(&f, 5);
    f.left
        .execute(
            "UPDATE contacts SET name = 'a name that is far too long' WHERE email = 'p3@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.created, r.links[0].to_right.rejected),
        (4, 1)
    );
    assert!(r.needs_attention());
    let q = f.store().quarantine(Some("c")).unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].reason.contains("CHECK constraint"), "{}", q[0].reason);
    // the journal marks the refused create `rejected` and only that one
    let journal = f.store().journal(Some("c"), None, None, 100).unwrap();
    let mut rejected: Vec<&str> = journal
        .iter()
        .filter(|e| e.status == "rejected")
        .filter_map(|e| e.left_key.as_deref())
        .collect();
    rejected.dedup();
    assert_eq!(rejected.len(), 1, "{journal:?}");
    assert_eq!(records_with_status(&journal, "applied"), 4, "{journal:?}");
    // fixed at the source, it goes through and the quarantine clears
    f.left
        .execute(
            "UPDATE contacts SET name = 'short' WHERE email = 'p3@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 1);
    assert!(!r.needs_attention());
}

#[test]
fn ambiguous_matches_are_quarantined_never_guessed() {
    let f = Fixture::new(LEFT, RIGHT, &link("mode = \"two-way\"", TWO_WAY_FIELDS));
    f.left
        .execute(
            "INSERT INTO contacts (email, name) VALUES ('dup@x.org', 'L')",
            [],
        )
        .unwrap();
    f.right
        .execute(
            "INSERT INTO customers (email, name) VALUES ('DUP@x.org', 'R1'), (' dup@x.org', 'R2')",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(writes(&r), 0);
    assert_eq!(r.links[0].quarantined, 3);
    // the duplicate is fixed: the remaining pair links, and the quarantine clears
    f.right
        .execute("DELETE FROM customers WHERE name = 'R2'", [])
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].quarantined, 0);
    assert_eq!(f.store().pair_count("c").unwrap(), 1);
}

#[test]
fn two_filled_collections_without_identity_rules_are_not_duplicated() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        "[links.c]\nleft = \"crm.contacts\"\nright = \"billing.customers\"\nleft_key = \"id\"\nright_key = \"cid\"\n[links.c.fields]\nemail = {}\n",
    );
    seed_left(&f, 3);
    f.right
        .execute("INSERT INTO customers (email) VALUES ('p0@x.org')", [])
        .unwrap();
    let r = f.run();
    assert!(r.refused());
    assert_eq!(right_names(&f).len(), 1);
}

#[test]
fn plan_writes_nothing_anywhere() {
    let f = Fixture::new(LEFT, RIGHT, &link("mode = \"two-way\"", TWO_WAY_FIELDS));
    seed_left(&f, 5);
    let before = (
        std::fs::read(f.path().join("left.db")).unwrap(),
        std::fs::read(f.path().join("right.db")).unwrap(),
    );
    let r = f.plan();
    assert_eq!(r.links[0].to_right.created, 5);
    assert!(f.state_snapshot().is_none(), "plan created the state store");
    assert_eq!(
        before,
        (
            std::fs::read(f.path().join("left.db")).unwrap(),
            std::fs::read(f.path().join("right.db")).unwrap()
        )
    );
    f.run();
    let state_before = f.state_snapshot();
    f.left
        .execute("UPDATE contacts SET name = 'x'", [])
        .unwrap();
    assert_eq!(f.plan().links[0].to_right.updated, 5);
    assert_eq!(state_before, f.state_snapshot());
}

#[test]
fn a_failed_read_never_counts_as_deletes() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"\non_delete = { left = \"propagate\", right = \"propagate\" }\nmax_delete_fraction = 1.0",
            TWO_WAY_FIELDS,
        ),
    );
    seed_left(&f, 4);
    f.run();
    // GIVEN the right table cannot be read (renamed away)
    f.right
        .execute("ALTER TABLE customers RENAME TO customers_old", [])
        .unwrap();
    let config = f.config();
    let mut state = f.store();
    let err = syncline::engine::run_cycle(&config, &mut state, RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    drop(state);
    // THEN nothing was deleted on the left, and once it is back, nothing happens
    f.right
        .execute("ALTER TABLE customers_old RENAME TO customers", [])
        .unwrap();
    assert_eq!(
        Fixture::rows(&f.left, "SELECT count(*) FROM contacts"),
        vec![vec![Value::Integer(4)]]
    );
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_state_store_made_for_other_collections_is_not_trusted() {
    let f = Fixture::new(LEFT, RIGHT, &link("mode = \"two-way\"", TWO_WAY_FIELDS));
    seed_left(&f, 5);
    f.run();
    // GIVEN the link now points at a copy of the right table under another name
    f.right.execute_batch("CREATE TABLE customers2 AS SELECT * FROM customers; DELETE FROM customers2 WHERE email = 'p4@x.org';").unwrap();
    f.write_config(
        &link("mode = \"two-way\"", TWO_WAY_FIELDS)
            .replace("billing.customers", "billing.customers2"),
    );
    // WHEN run THEN the old id map is dropped with a warning, records are re-linked by
    // match_on, and only the record really missing there is created: no duplicates
    let r = f.run();
    assert!(
        r.links[0]
            .warnings
            .iter()
            .any(|w| w.contains("other collections or keys")),
        "{:?}",
        r.links[0].warnings
    );
    assert_eq!(r.links[0].to_right.created, 1);
    assert_eq!(
        Fixture::rows(&f.right, "SELECT count(*) FROM customers2"),
        vec![vec![Value::Integer(5)]]
    );
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn a_created_record_s_base_is_what_its_create_sent() {
    // GIVEN a left record with a field a transform normalizes and a NULL field
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"two-way\"",
            "email = { owner = \"left\", transform = \"trim+lowercase\" }\nname = { owner = \"left\" }\nnotes = { owner = \"both\", conflict = \"manual\" }",
        ),
    );
    f.left
        .execute(
            "INSERT INTO contacts (email, name, notes) VALUES (' P0@X.org ', NULL, 'n')",
            [],
        )
        .unwrap();
    // WHEN a first load creates it on the right
    assert_eq!(f.run().links[0].to_right.created, 1);
    // THEN the pair's base holds the values sent, normalized, and the NULL the right
    // stored where nothing was sent
    use syncline::model::{Key, Side};
    let left_key = Key::single(Value::Integer(1)).encode();
    let pairs = f
        .store()
        .pairs_by("c", Side::Left, std::slice::from_ref(&left_key))
        .unwrap();
    let base: Vec<(String, Value)> = pairs[&left_key]
        .base
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(
        base,
        [
            ("email".to_string(), text("p0@x.org")),
            ("name".to_string(), Value::Null),
            ("notes".to_string(), text("n"))
        ]
    );
    // AND an edit on the right of a field both own is a clean update, not a conflict
    f.right
        .execute("UPDATE customers SET notes = 'edited'", [])
        .unwrap();
    let r = f.run();
    assert_eq!((r.links[0].to_left.updated, r.links[0].conflicts), (1, 0));
    assert_eq!(writes(&f.run()), 0);
}

/// Wide rows: a scan's batch ends once its records weigh `BATCH_BYTES`, before
/// `batch_size` rows, so the few batches in memory are bounded in bytes, not only in
/// rows. The journal shows the batches: a first load journals each one's creates as one
/// entry with its record count.
#[test]
fn wide_rows_are_read_in_batches_bounded_in_bytes() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nnotes = {}"),
    );
    let wide = "x".repeat(1 << 20);
    for i in 0..20 {
        f.left
            .execute(
                "INSERT INTO contacts (email, notes) VALUES (?1, ?2)",
                rusqlite::params![format!("w{i}@x.org"), wide],
            )
            .unwrap();
    }
    assert_eq!(f.run().links[0].to_right.created, 20);
    let batches = created_per_batch(&f, 1);
    let per_batch = (syncline::connectors::BATCH_BYTES >> 20) as i64;
    assert_eq!(batches.iter().sum::<i64>(), 20, "{batches:?}");
    assert!(
        batches.len() >= 3 && batches.iter().all(|&n| n <= per_batch),
        "batches of at most {per_batch} MiB-wide rows: {batches:?}"
    );
    assert_eq!(
        Fixture::rows(
            &f.right,
            "SELECT count(*), sum(length(notes)) FROM customers"
        ),
        vec![vec![Value::Integer(20), Value::Integer(20 << 20)]]
    );
}

/// The records each batch of run `run` created, as its journal entries count them, in
/// the order `log` lists them (newest first).
fn created_per_batch(f: &Fixture, run: i64) -> Vec<i64> {
    let log = support::syncline(f.path())
        .args(["log", "--json", "--run", &run.to_string()])
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&log.stdout).unwrap();
    entries["journal"]
        .as_array()
        .expect("log --json lists entries")
        .iter()
        .filter(|e| e["op"] == "create")
        .map(|e| e["records"].as_i64().unwrap_or(1))
        .collect()
}

/// A scan's batches are handed over as the system sent them: the record held back from
/// each batch's end (until the next shows its key does not repeat) joins its own batch,
/// so a scan does not end in a batch of one — on a cursor read, one more fetch and write
/// round trip after all the others.
#[test]
fn a_scan_is_planned_in_the_batches_it_was_read_in() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link(
            "mode = \"one-way\"\nbatch_size = 10",
            "email = {}\nname = {}",
        ),
    );
    seed_left(&f, 25);
    assert_eq!(f.run().links[0].to_right.created, 25);
    assert_eq!(created_per_batch(&f, 1), [5, 10, 10]);
}

fn count(conn: &rusqlite::Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// One run of a link at a time, whichever processes share the store: a run that finds
/// its link held leaves it alone (exit 5, naming the holder) and runs the others; `plan`
/// is not held up and `status` names the holder; once the holder is gone — even without letting go, as a killed
/// process — the link runs.
#[test]
fn a_link_another_run_holds_is_left_alone_until_it_is_free() {
    let archive = "[links.a]\nleft = \"crm.contacts\"\nright = \"billing.archive\"\nleft_key = \"id\"\nright_key = \"aid\"\nmode = \"one-way\"\n[links.a.fields]\nemail = {}\n";
    let f = Fixture::new(
        LEFT,
        // The right side plus an archive table the second link fills.
        &format!(
            "{RIGHT}\nCREATE TABLE archive (aid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL);"
        ),
        &format!(
            "{}\n{archive}",
            link("mode = \"one-way\"", "email = {}\nname = {}")
        ),
    );
    seed_left(&f, 3);
    // GIVEN another process running link `c` (here: another handle on the store)
    let mut other = f.store();
    assert_eq!(
        other.hold_link("c").unwrap(),
        syncline::state::LinkHold::Held
    );
    // WHEN syncline runs
    let out = support::syncline(f.path()).arg("run").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // THEN `c` is left alone, the holder is named, and the other link ran
    assert_eq!(out.status.code(), Some(5), "{stdout}");
    assert!(
        stdout.contains("BUSY") && stdout.contains(&format!("pid {}", std::process::id()))
            || stdout.contains(&format!("process {}", std::process::id())),
        "{stdout}"
    );
    assert_eq!(count(&f.right, "customers"), 0);
    assert_eq!(count(&f.right, "archive"), 3);
    // AND plan, which writes nothing, still shows what `c` would do
    let plan = support::syncline(f.path()).arg("plan").output().unwrap();
    assert_eq!(plan.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&plan.stdout).contains("create"));
    // AND status says who is running `c`, and that nobody runs `a`
    let status = support::syncline(f.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let running = |link: &str| {
        status["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["link"] == link)
            .unwrap()["running"]
            .clone()
    };
    assert!(
        running("c")
            .as_str()
            .is_some_and(|h| h.contains(&std::process::id().to_string())),
        "{status}"
    );
    assert_eq!(running("a"), serde_json::Value::Null, "{status}");
    // WHEN the holder goes away without letting go
    drop(other);
    // THEN the next run takes the link and does its work once
    let (code, stderr) = support::run_binary(f.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(count(&f.right, "customers"), 3);
    let status = support::syncline(f.path()).arg("status").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("running now"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    assert_eq!(writes(&f.run()), 0);
}

/// A run found `running` in the store is only taken for dead — marked `interrupted`,
/// its planned writes `unknown` — once nobody holds it: never while it is still going.
#[test]
fn a_run_still_going_is_not_taken_for_interrupted() {
    let f = Fixture::new(LEFT, RIGHT, &link("mode = \"one-way\"", "email = {}"));
    let mut going = f.store();
    let run = going.begin_run("run").unwrap();
    let mut newcomer = f.store();
    assert_eq!(newcomer.mark_interrupted_runs().unwrap(), 0);
    assert_eq!(newcomer.last_runs(1).unwrap()[0]["status"], "running");
    going.finish_run(run, "ok", &serde_json::json!([])).unwrap();
    assert_eq!(newcomer.mark_interrupted_runs().unwrap(), 0);
    assert_eq!(newcomer.last_runs(1).unwrap()[0]["status"], "ok");
    // A run whose process died (its hold gone with it) is.
    let mut dies = f.store();
    dies.begin_run("run").unwrap();
    drop(dies);
    assert_eq!(newcomer.mark_interrupted_runs().unwrap(), 1);
    assert_eq!(newcomer.last_runs(1).unwrap()[0]["status"], "interrupted");
}

/// Two `syncline run`s that certainly overlap: the first is held mid-way (paused right
/// after journaling its first batch) while the second starts; the second finds the link
/// held, says by whom and exits 5, and every record is created exactly once.
#[test]
fn a_run_that_overlaps_another_leaves_the_link_to_it() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nname = {}"),
    );
    seed_left(&f, 3000);
    let first = spawn_run(&f, Some("after_journal:1:pause=4000"));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = spawn_run(&f, None).wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    // Whichever took the link first (on a loaded machine the paused one may not have
    // started its link yet), the other found it held while it ran.
    let (ran, left_alone) = if first.status.code() == Some(0) {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ran.status.code(), Some(0));
    let said = String::from_utf8_lossy(&left_alone.stdout);
    assert_eq!(left_alone.status.code(), Some(5), "{said}");
    assert!(said.contains("BUSY"), "{said}");
    each_created_once(&f, 3000);
}

/// Two `syncline run`s started together on one first load: whichever order they take,
/// every record is created exactly once (the right side has no unique column that would
/// refuse a duplicate), and the one that found the link held says so.
#[test]
fn two_runs_started_together_create_each_record_once() {
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nname = {}"),
    );
    seed_left(&f, 3000);
    let (a, b) = (spawn_run(&f, None), spawn_run(&f, None));
    let outs: Vec<_> = [a, b]
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect();
    let mut codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
    codes.sort_unstable();
    assert!(
        codes == [Some(0), Some(0)] || codes == [Some(0), Some(5)],
        "exit codes {codes:?}: {}",
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<String>()
    );
    each_created_once(&f, 3000);
}

#[test]
fn a_batch_refused_whole_for_one_reason_stops_the_link() {
    // GIVEN a receiving table that refuses every record for one reason check cannot see
    // (a CHECK constraint), and a first load of 30 batches
    let f = Fixture::new(
        LEFT,
        "CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL CHECK (email NOT LIKE '%@x.org'),
            name TEXT, notes TEXT, street TEXT, city TEXT, modified_at INTEGER, deleted INTEGER NOT NULL DEFAULT 0, crm_id TEXT);",
        &link("mode = \"one-way\"\nbatch_size = 100", "email = {}\nname = {}"),
    );
    seed_left(&f, 3000);
    // WHEN run THEN the link stops after the first batch with the reason, instead of
    // sending all 3,000 and replaying each alone
    let config = f.config();
    let mut state = f.store();
    let err = syncline::engine::run_cycle(&config, &mut state, RunOptions::default()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("billing.customers refused all")
            && message.contains("writes of a batch for one reason: CHECK constraint failed"),
        "{message}"
    );
    assert!(matches!(err, syncline::Error::Refused(_)));
    // AND that batch's records (and the one the writer had in flight behind it) are
    // quarantined with the reason; nothing else was sent
    let q = state.quarantine(Some("c")).unwrap();
    assert!((100..=200).contains(&q.len()), "{}", q.len());
    assert!(
        q.iter()
            .all(|q| q.reason.contains("CHECK constraint failed"))
    );
    drop(state);
    assert_eq!(
        Fixture::rows(&f.right, "SELECT count(*) FROM customers"),
        vec![vec![Value::Integer(0)]]
    );
    // AND once the cause is fixed, the next run creates everything
    f.right
        .execute_batch("CREATE TABLE c2 AS SELECT * FROM customers; DROP TABLE customers;
            CREATE TABLE customers (cid INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL, name TEXT, notes TEXT,
            street TEXT, city TEXT, modified_at INTEGER, deleted INTEGER NOT NULL DEFAULT 0, crm_id TEXT);")
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 3000);
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn records_whose_key_repeats_or_is_null_are_quarantined_not_synced() {
    // GIVEN a left table with no primary key: key 2 twice, and a NULL key
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER, email TEXT NOT NULL, name TEXT);
         INSERT INTO contacts VALUES (1, 'a@x.org', 'A'), (2, 'b@x.org', 'b'), (2, 'b-dup@x.org', 'b-dup'),
           (NULL, 'n@x.org', 'N'), (3, 'c@x.org', 'C');",
        RIGHT,
        &link(
            "mode = \"one-way\"\non_delete = { left = \"propagate\" }",
            "email = {}\nname = {}",
        ),
    );
    // WHEN run THEN only the records with a key of their own are created, the others are
    // quarantined with the reason, and the next run neither writes nor flaps
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 2, "{:?}", r.links[0]);
    assert!(r.needs_attention());
    let reasons = |f: &Fixture| -> Vec<String> {
        let mut q: Vec<String> = f
            .store()
            .quarantine(Some("c"))
            .unwrap()
            .into_iter()
            .map(|q| format!("{} {}", q.kind, q.reason))
            .collect();
        q.sort();
        q
    };
    let q = reasons(&f);
    assert_eq!(q.len(), 2, "{q:?}");
    assert!(
        q[0].starts_with("bad_key left:2 is left alone: its key is shared by 2 records"),
        "{q:?}"
    );
    assert!(
        q[1].starts_with("bad_key left:NULL is left alone: its key is NULL"),
        "{q:?}"
    );
    for _ in 0..2 {
        assert_eq!(writes(&f.run()), 0);
    }
    assert_eq!(
        Fixture::rows(&f.right, "SELECT email FROM customers ORDER BY email"),
        vec![vec![text("a@x.org")], vec![text("c@x.org")]]
    );
    // AND a linked record whose key starts repeating is left alone, not deleted
    f.left
        .execute("INSERT INTO contacts VALUES (3, 'c2@x.org', 'C2')", [])
        .unwrap();
    let r = f.run();
    assert_eq!(writes(&r), 0, "{:?}", r.links[0].planned);
    assert_eq!(reasons(&f).len(), 3);
    // AND once the keys are unique again, the records sync and the quarantine clears
    f.left
        .execute_batch(
            "DELETE FROM contacts WHERE email IN ('b-dup@x.org', 'c2@x.org'); UPDATE contacts SET id = 4 WHERE id IS NULL;",
        )
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 2);
    assert!(!r.needs_attention(), "{:?}", reasons(&f));
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn check_warns_when_nothing_keeps_a_key_unique() {
    let f = Fixture::new(
        "CREATE TABLE contacts (id INTEGER, email TEXT NOT NULL, name TEXT);",
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nname = {}"),
    );
    let out = support::syncline(f.path()).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning [key-unique] the left key `id` of crm.contacts is not its primary key or a unique NOT NULL column"),
        "{text}"
    );
    assert!(!text.contains("the right key"), "{text}");
}

#[test]
fn text_that_is_not_utf8_is_quarantined_not_sent_altered() {
    // GIVEN a SQLite left whose text holds bytes that are not UTF-8
    let f = Fixture::new(
        LEFT,
        RIGHT,
        &link("mode = \"one-way\"", "email = {}\nname = {}"),
    );
    seed_left(&f, 3);
    f.left
        .execute(
            "UPDATE contacts SET name = CAST(X'41FF42' AS TEXT) WHERE email = 'p1@x.org'",
            [],
        )
        .unwrap();
    // WHEN run THEN that record is quarantined with the reason, the others are created
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 2);
    let q = f.store().quarantine(Some("c")).unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].kind, QuarantineKind::BadValue);
    assert!(
        q[0].reason
            .contains("column `name` holds text that is not valid UTF-8"),
        "{}",
        q[0].reason
    );
    assert!(
        Fixture::rows(
            &f.right,
            "SELECT count(*) FROM customers WHERE name LIKE '%' || char(65533) || '%'"
        ) == vec![vec![Value::Integer(0)]]
    );
    // AND once fixed, it syncs
    f.left
        .execute(
            "UPDATE contacts SET name = 'AB' WHERE email = 'p1@x.org'",
            [],
        )
        .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.created, 1);
    assert!(!r.needs_attention());
}
