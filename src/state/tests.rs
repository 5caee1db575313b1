//! The state store's own tests: codecs, journal grouping, upgrades.

use super::{Change, StateStore};
use crate::model::{Name, Side, Value};
use std::collections::BTreeMap;

proptest::proptest! {
    /// A base written directly is the JSON serde writes for the map, whatever its
    /// names and texts hold (quotes, backslashes, control characters, any Unicode),
    /// and reads back as the map, by serde and by `decode_base`.
    #[test]
    fn a_base_is_written_as_serde_writes_it(
        fields in proptest::collection::btree_map("[a-z_\"\\\\\u{0}-\u{1f}é]{0,6}", "\\PC*|[\"\\\\\u{0}-\u{1f}\u{7f}]{0,3}", 0..6),
        number: i64,
    ) {
        let mut base: BTreeMap<Name, Value> = fields
            .into_iter()
            .map(|(k, v)| (Name::from(k), Value::Text(v)))
            .collect();
        base.insert("n".into(), Value::Integer(number));
        let written = super::encode_base(&base);
        proptest::prop_assert_eq!(&written, &serde_json::to_string(&base).unwrap());
        let read: BTreeMap<Name, Value> = serde_json::from_str(&written).unwrap();
        proptest::prop_assert_eq!(read, base.clone());
        // Read with shared names: the same map, and a second read shares the first's.
        let mut names = std::collections::HashSet::new();
        let first = super::decode_base(&written, &mut names).unwrap();
        let second = super::decode_base(&written, &mut names).unwrap();
        proptest::prop_assert_eq!(&first, &base);
        for (a, b) in first.keys().zip(second.keys()) {
            proptest::prop_assert!(std::sync::Arc::ptr_eq(a, b), "{} is read twice", a);
        }
        let unsorted = base.iter().rev().map(|(k, v)| (&**k, v)).collect();
        proptest::prop_assert_eq!(super::encode_base_fields(unsorted), written);
    }
}

/// The fast read of a base takes only what syncline writes; anything else goes to
/// serde, which reads what is valid JSON and refuses the rest.
#[test]
fn a_base_syncline_did_not_write_is_read_by_serde() {
    let mut names = std::collections::HashSet::new();
    let plain = super::decode_plain_base(r#"{"a":"I1","b":"Tx"}"#, &mut names).unwrap();
    assert_eq!(plain.len(), 2);
    for other in [
        r#"{ "a": "I1" }"#,
        r#"{"a":"T\"q"}"#,
        r#"{"a":"I1",}"#,
        r#"{"a":""}"#,
        "[]",
        "",
    ] {
        assert_eq!(super::decode_plain_base(other, &mut names), None, "{other}");
    }
    let spaced = super::decode_base(r#"{ "a": "I1" }"#, &mut names).unwrap();
    assert_eq!(spaced.get("a"), Some(&Value::Integer(1)));
    assert!(super::decode_base(r#"{"a":"I1",}"#, &mut names).is_err());
    assert_eq!(super::decode_base("{}", &mut names).unwrap().len(), 0);
}

/// Links `left` to `right` on link `c`, with an empty base.
fn put_pair(s: &mut StateStore, left: &str, right: &str) {
    let pair = super::PairRow {
        left_key: left.into(),
        right_key: right.into(),
        base: Default::default(),
        marks: Default::default(),
        tombstone: None,
        held: Default::default(),
    };
    s.put_pairs("c", &[pair.encode()]).unwrap();
}

fn create_change() -> Change {
    Change {
        side: Side::Right,
        op: "create".into(),
        field: None,
        old: None,
        new: None,
        reason: "new on the left".into(),
    }
}

/// Pairs are found by either side's keys whether the keys asked for lie close
/// together (one range read) or far apart in a range of many other pairs (the range
/// is refused and the keys looked up one by one), and keys without a pair are absent.
#[test]
fn pairs_are_found_by_key_whether_their_range_is_dense_or_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(&dir.path().join("s.db")).unwrap();
    let key = |n: i64| crate::model::Key::single(Value::Integer(n)).encode();
    let pairs: Vec<_> = (1..=100)
        .map(|n| {
            super::PairRow {
                left_key: key(n),
                right_key: format!("r{n}"),
                base: [(Name::from("f"), Value::Integer(n))].into(),
                marks: Default::default(),
                tombstone: None,
                held: Default::default(),
            }
            .encode()
        })
        .collect();
    s.put_pairs("c", &pairs).unwrap();
    s.put_pairs("other", &pairs[..10]).unwrap();
    for wanted in [
        vec![3, 4, 5],
        vec![20, 21, 23, 24],
        vec![3, 4, 5, 200],
        vec![1, 100],
        vec![7],
        vec![50, 10, 99, 1],
        vec![0, 101],
    ] {
        let expected: Vec<i64> = wanted
            .iter()
            .copied()
            .filter(|n| (1..=100).contains(n))
            .collect();
        for side in [Side::Left, Side::Right] {
            let side_key = |n: i64| match side {
                Side::Left => key(n),
                Side::Right => format!("r{n}"),
            };
            let keys: Vec<String> = wanted.iter().map(|&n| side_key(n)).collect();
            let found = s.pairs_by("c", side, &keys).unwrap();
            let mut got: Vec<(i64, String, String)> = found
                .iter()
                .map(|(k, p)| {
                    let Some(Value::Integer(n)) = p.base.get("f") else {
                        panic!("base of {k}")
                    };
                    (*n, k.clone(), p.right_key.clone())
                })
                .collect();
            got.sort();
            let mut want: Vec<(i64, String, String)> = expected
                .iter()
                .map(|&n| (n, side_key(n), format!("r{n}")))
                .collect();
            want.sort();
            assert_eq!(got, want, "{side} keys {wanted:?}");
        }
    }
}

/// v5 listed a grouped entry's records a row each; v6 lists them in chunks. An
/// upgraded store still finds the entry by any of its records' keys, on either side.
#[test]
fn a_v5_store_keeps_its_grouped_entries_findable_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        super::schema::migrations()
            .to_version(&mut conn, 5)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, started_at, command, status) VALUES (1, 't', 'run', 'ok');
             INSERT INTO journal (id, run, at, link, side, op, reason, status, records)
               VALUES (7, 1, 't', 'c', 'right', 'create', 'new on the left', 'applied', 3);
             INSERT INTO journal_members (link, key_side, key, entry)
               VALUES ('c', 'left', 'Pa1', 7), ('c', 'left', 'Pa2', 7), ('c', 'left', 'Pb10', 7);
             INSERT INTO pairs (link, left_key, right_key, base) VALUES ('c', 'Pb10', 'Tten', '{}');",
        )
        .unwrap();
    }
    let mut s = StateStore::open(&path).unwrap();
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
    assert!(s.journal(None, Some("Pa1"), None, 10).unwrap().len() == 1);
}

#[test]
fn an_older_store_is_upgraded_to_sortable_keys_and_an_applied_batch_is_one_range() {
    use crate::model::{Key, Value};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let composite = Key(vec![Value::Integer(-12), Value::Text("x\u{1f}\\I7".into())]);
    // A store an earlier release wrote (schema v2): statuses are in the rows, and
    // integer keys in their earlier form (`I1`, `I-12`).
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        super::schema::migrations()
            .to_version(&mut conn, 2)
            .unwrap();
        conn.execute_batch(
            "INSERT INTO runs (id, started_at, command, status) VALUES (1, 't', 'run', 'ok');
             INSERT INTO journal (run, at, link, left_key, side, op, reason, status)
               VALUES (1, 't', 'c', 'I1', 'right', 'create', 'new on the left', 'applied');",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO pairs (link, left_key, right_key, base) VALUES ('c', ?1, 'Tabc', '{}'),
               ('c', 'I9223372036854775807', 'I-9223372036854775808', '{}')",
            ["I-12\u{1f}Tx\\u\\\\I7"],
        )
        .unwrap();
    }
    let status = |s: &mut StateStore| -> Vec<String> {
        let mut entries = s.journal(Some("c"), None, None, 10).unwrap();
        entries.sort_by_key(|e| e.id);
        entries.into_iter().map(|e| e.status).collect()
    };
    // `plan`, `log`, `status` would look keys up in the new form: they refuse.
    let Err(refused) = StateStore::open_read_only(&path) else {
        panic!("a read-only open of a v2 store must ask for an upgrade")
    };
    assert!(refused.to_string().contains("syncline run"), "{refused}");
    // A run upgrades it, keys and all.
    drop(StateStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let stored = |sql: &str| -> Vec<String> {
        let mut st = conn.prepare(sql).unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(stored("SELECT left_key FROM journal"), ["Pa1"]);
    let mut pairs = stored("SELECT left_key || ' ' || right_key FROM pairs");
    pairs.sort();
    let mut expected = vec![
        format!("{} Tabc", composite.encode()),
        format!(
            "{} {}",
            Key::single(Value::Integer(i64::MAX)).encode(),
            Key::single(Value::Integer(i64::MIN)).encode()
        ),
    ];
    expected.sort();
    assert_eq!(pairs, expected);
    drop(conn);
    // A run upgrades it; a batch that applies is recorded as its range, and an entry
    // with another outcome keeps it.
    let mut s = StateStore::open(&path).unwrap();
    let change = create_change();
    let run = s.begin_run("run").unwrap();
    let at = s
        .journal_planned_batch(
            run,
            "c",
            &[(Some("Pa2"), None, &change), (Some("Pa3"), None, &change)],
        )
        .unwrap();
    s.journal_outcome(at, "c", Side::Right, (Some("Pa3"), None), "rejected")
        .unwrap();
    let next = s
        .journal_planned_batch(run, "c", &[(Some("Pa4"), None, &change)])
        .unwrap();
    s.journal_applied_within(at).unwrap();
    assert_eq!(
        status(&mut s),
        ["applied", "applied", "rejected", "planned"]
    );
    let last = s.last_write("c", "Pa2", "any").unwrap();
    assert_eq!(last.map(|(r, ..)| r), Some(run));
    // The two creates were one entry; the rejected one left it with its outcome. Each
    // is found by its key, and a created record by its new key through the id map.
    put_pair(&mut s, "Pa2", "Tr2");
    let found = |s: &mut StateStore, key: &str| -> Vec<(Option<String>, String, Option<i64>)> {
        let entries = s.journal(Some("c"), Some(key), None, 10).unwrap();
        entries
            .into_iter()
            .map(|e| (e.left_key, e.status, e.records))
            .collect()
    };
    assert_eq!(
        found(&mut s, "Tr2"),
        [(Some("2".into()), "applied".into(), Some(1))]
    );
    assert_eq!(
        found(&mut s, "Pa3"),
        [(Some("3".into()), "rejected".into(), None)]
    );
    // The next batch never came back: the run is interrupted, its entry unknown.
    drop(s);
    let mut s = StateStore::open(&path).unwrap();
    assert_eq!(s.mark_interrupted_runs().unwrap(), 1);
    assert_eq!(
        status(&mut s),
        ["applied", "applied", "rejected", "unknown"]
    );
    assert_eq!(next.run, run);
}

#[test]
fn a_run_that_never_finished_leaves_its_planned_entries_unknown_and_no_one_elses() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(&dir.path().join("state.db")).unwrap();
    let change = create_change();
    // A finished run whose entry stayed planned (an older build's): not this run's.
    let done = s.begin_run("run").unwrap();
    s.journal_batch(done, "c", &[(Some("Pa1"), None, &change)], "planned")
        .unwrap();
    s.finish_run(done, "ok", &serde_json::json!({})).unwrap();
    // The run that died between journaling a batch and committing it.
    let died = s.begin_run("run").unwrap();
    s.journal_planned_batch(
        died,
        "c",
        &[(Some("Pa2"), None, &change), (Some("Pa3"), None, &change)],
    )
    .unwrap();
    assert_eq!(s.mark_interrupted_runs().unwrap(), 1);
    // The died run's two creates are one entry, listed as such…
    let journal = s.journal(Some("c"), None, Some(died), 10).unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(
        (journal[0].records, journal[0].left_key.as_deref()),
        (Some(2), None)
    );
    // …and under each record's key when the journal is asked for one. The journal
    // shows keys as people write them: `Pa2` (integer 2) reads `2`.
    let mut status = |key: &str| {
        let found = s.journal(Some("c"), Some(key), None, 10).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        (found[0].left_key.clone().unwrap(), found[0].status.clone())
    };
    assert_eq!(status("Pa2"), ("2".into(), "unknown".into()));
    assert_eq!(status("Pa3"), ("3".into(), "unknown".into()));
    assert_eq!(status("Pa1"), ("1".into(), "planned".into()));
    // A run that failed (a system broke mid-batch) leaves no entry `planned` either.
    let failed = s.begin_run("run").unwrap();
    let at = s
        .journal_planned_batch(failed, "c", &[(Some("Pa4"), None, &change)])
        .unwrap();
    assert_eq!((at.run, at.upto - at.after), (failed, 1));
    s.finish_run(failed, "failed", &serde_json::json!({}))
        .unwrap();
    let journal = s.journal(Some("c"), None, Some(failed), 10).unwrap();
    assert_eq!(journal[0].status, "unknown");
}

/// The journal's updates of the record `key` on link `c`: field, old → new, status, and
/// the group's record count.
fn updates_of(s: &mut StateStore, key: &str) -> Vec<(String, String, String, Option<i64>)> {
    s.journal(Some("c"), Some(key), None, 10)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.field.unwrap_or_default(),
                format!("{} → {}", e.old.unwrap(), e.new.unwrap()),
                e.status,
                e.records,
            )
        })
        .collect()
}

fn update_change(field: &str, old: &str, new: &str) -> Change {
    Change {
        side: Side::Right,
        op: "update".into(),
        field: Some(field.into()),
        old: Some(Value::Text(old.into())),
        new: Some(Value::Text(new.into())),
        reason: "changed on left".into(),
    }
}

#[test]
fn a_batchs_updates_of_a_field_are_one_entry_and_each_record_keeps_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(&dir.path().join("state.db")).unwrap();
    let run = s.begin_run("run").unwrap();
    let (a, b, c) = (
        update_change("name", "a0", "a1"),
        update_change("name", "b0", "b1"),
        update_change("name", "c0", "c1"),
    );
    // Record 3 also changed another field: an entry of its own (nothing to group with).
    let other = update_change("email", "c@old", "c@new");
    let at = s
        .journal_planned_batch(
            run,
            "c",
            &[
                (Some("Pa1"), Some("Pa1"), &a),
                (Some("Pa2"), Some("Pa2"), &b),
                (Some("Pa3"), Some("Pa3"), &c),
                (Some("Pa3"), Some("Pa3"), &other),
            ],
        )
        .unwrap();
    let rows = |s: &mut StateStore| -> i64 {
        s.db.query_opt("SELECT COUNT(*) FROM journal", &[])
            .unwrap()
            .unwrap()
            .int(0)
            .unwrap()
    };
    assert_eq!(
        rows(&mut s),
        2,
        "one entry for the three `name` updates, one for `email`"
    );
    // The write of record 2 came back stale: it leaves the group with its own values.
    s.journal_outcome(at, "c", Side::Right, (Some("Pa2"), Some("Pa2")), "stale")
        .unwrap();
    s.journal_applied_within(at).unwrap();
    assert_eq!(
        updates_of(&mut s, "Pa1"),
        [(
            "name".into(),
            "\"a0\" → \"a1\"".into(),
            "applied".into(),
            Some(2)
        )]
    );
    assert_eq!(
        updates_of(&mut s, "Pa2"),
        [(
            "name".into(),
            "\"b0\" → \"b1\"".into(),
            "stale".into(),
            None
        )]
    );
    assert_eq!(
        updates_of(&mut s, "Pa3"),
        [
            (
                "email".into(),
                "\"c@old\" → \"c@new\"".into(),
                "applied".into(),
                None
            ),
            (
                "name".into(),
                "\"c0\" → \"c1\"".into(),
                "applied".into(),
                Some(2)
            ),
        ]
    );
    // The unfiltered journal lists the group once, with its field and no one's values.
    let all = s.journal(Some("c"), None, None, 10).unwrap();
    let group: Vec<_> = all.iter().filter(|e| e.records.is_some()).collect();
    assert_eq!(group.len(), 1);
    assert_eq!(group[0].field.as_deref(), Some("name"));
    assert_eq!((group[0].old.clone(), group[0].records), (None, Some(2)));
    // Its last write is found through the group, per field.
    assert!(s.last_write("c", "Pa1", "name").unwrap().is_some());
    assert!(s.last_write("c", "Pa1", "email").unwrap().is_none());
    // Listed under its left key, an update shows its pair's right key too.
    put_pair(&mut s, "Pa1", "Tr1");
    let found = s.journal(Some("c"), Some("Pa1"), None, 10).unwrap();
    assert_eq!(
        (found[0].left_key.as_deref(), found[0].right_key.as_deref()),
        (Some("1"), Some("r1"))
    );
}

/// A batch's updates are spread over the whole key range: listed by key range, every
/// chunk would cover nearly every key, and one record's lookup would read the whole
/// journal's chunks. They are listed by bucket, and each record is found in its own.
#[test]
fn grouped_updates_are_listed_by_bucket_and_each_record_found_in_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(&dir.path().join("state.db")).unwrap();
    let run = s.begin_run("run").unwrap();
    let keys: Vec<String> = (0..600)
        .map(|i| crate::model::Key::single(Value::Integer(i * 97)).encode())
        .collect();
    let changes: Vec<Change> = (0..600)
        .map(|i| update_change("name", &format!("old{i}"), &format!("new{i}")))
        .collect();
    let entries: Vec<_> = keys
        .iter()
        .zip(&changes)
        .map(|(k, c)| (Some(k.as_str()), Some(k.as_str()), c))
        .collect();
    let at = s.journal_planned_batch(run, "c", &entries).unwrap();
    s.journal_applied_within(at).unwrap();
    let buckets: std::collections::BTreeSet<String> =
        keys.iter().map(|k| super::journal::bucket_of(k)).collect();
    let chunks =
        s.db.query("SELECT first_key, last_key FROM journal_member_chunks", &[])
            .unwrap();
    assert_eq!(chunks.len(), buckets.len(), "one chunk per bucket");
    for c in &chunks {
        let (first, last) = (c.text(0).unwrap(), c.text(1).unwrap());
        assert!(buckets.contains(&first) && first == last, "{first}..{last}");
    }
    for i in [0usize, 1, 2, 299, 599] {
        let found = s.journal(Some("c"), Some(&keys[i]), None, 10).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].old.clone(), found[0].new.clone(), found[0].records),
            (
                Some(serde_json::json!(format!("old{i}"))),
                Some(serde_json::json!(format!("new{i}"))),
                Some(600)
            )
        );
    }
}

/// A record whose write came back stale after it changed two fields, each grouped with
/// other records' changes of that field: it leaves both groups, each time with its own
/// values, and the groups keep the rest.
#[test]
fn a_stale_record_leaves_every_group_it_was_listed_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = StateStore::open(&dir.path().join("state.db")).unwrap();
    let run = s.begin_run("run").unwrap();
    let changes: Vec<(String, Change)> = (1..=3)
        .flat_map(|i| {
            let key = format!("Pa{i}");
            [
                (
                    key.clone(),
                    update_change("name", &format!("n{i}"), &format!("N{i}")),
                ),
                (
                    key,
                    update_change("email", &format!("e{i}"), &format!("E{i}")),
                ),
            ]
        })
        .collect();
    let entries: Vec<_> = changes
        .iter()
        .map(|(k, c)| (Some(k.as_str()), Some(k.as_str()), c))
        .collect();
    let at = s.journal_planned_batch(run, "c", &entries).unwrap();
    s.journal_outcome(at, "c", Side::Right, (Some("Pa2"), Some("Pa2")), "stale")
        .unwrap();
    s.journal_applied_within(at).unwrap();
    let mut stale = updates_of(&mut s, "Pa2");
    stale.sort();
    assert_eq!(
        stale,
        [
            (
                "email".into(),
                "\"e2\" → \"E2\"".into(),
                "stale".into(),
                None
            ),
            (
                "name".into(),
                "\"n2\" → \"N2\"".into(),
                "stale".into(),
                None
            ),
        ]
    );
    let mut kept = updates_of(&mut s, "Pa3");
    kept.sort();
    assert_eq!(
        kept,
        [
            (
                "email".into(),
                "\"e3\" → \"E3\"".into(),
                "applied".into(),
                Some(2)
            ),
            (
                "name".into(),
                "\"n3\" → \"N3\"".into(),
                "applied".into(),
                Some(2)
            ),
        ]
    );
}
