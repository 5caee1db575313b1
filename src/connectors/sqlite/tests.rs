use super::*;

#[test]
fn creates_that_send_their_keys_go_together_and_a_refused_one_alone() {
    let (_d, mut c, spec) = db();
    let create = |id: i64, s: Option<&str>| Write::Create {
        values: vec![
            ("id".into(), Value::Integer(id)),
            ("s".into(), s.map_or(Value::Null, |s| Value::Text(s.into()))),
        ],
    };
    // 5 is refused (s NOT NULL); 1 already exists (the fixture's row).
    let writes: Vec<Write> = (2..=7)
        .map(|id| create(id, (id != 5).then_some("ok")))
        .chain([create(1, Some("dup"))])
        .collect();
    let out = c.apply(&spec, &writes).unwrap().outcomes;
    let keys: Vec<Option<i64>> = out
        .iter()
        .map(|o| match o {
            WriteOutcome::Created(Key(k)) => match k[..] {
                [Value::Integer(i)] => Some(i),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        [Some(2), Some(3), Some(4), None, Some(6), Some(7), None]
    );
    assert!(matches!(&out[3], WriteOutcome::Rejected(r) if r.contains("NOT NULL")));
    assert!(matches!(&out[6], WriteOutcome::Rejected(r) if r.contains("UNIQUE")));
    let ids: Vec<i64> = c
        .conn
        .prepare("SELECT id FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(ids, [1, 2, 3, 4, 6, 7]);
    // All accepted: one statement, and the keys are the ones sent.
    let writes: Vec<Write> = (20..25).map(|id| create(id, Some("ok"))).collect();
    let out = c.apply(&spec, &writes).unwrap().outcomes;
    let expected: Vec<WriteOutcome> = (20..25)
        .map(|id| WriteOutcome::Created(Key(vec![Value::Integer(id)])))
        .collect();
    assert_eq!(out, expected);
    let count: i64 = c
        .conn
        .query_row("SELECT count(*) FROM t WHERE id >= 20", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 5);
    // A text key in an INTEGER column is stored as a number: its key is read back.
    let out = c
        .apply(
            &spec,
            &[
                Write::Create {
                    values: vec![
                        ("id".into(), Value::Text("10".into())),
                        ("s".into(), Value::Text("a".into())),
                    ],
                },
                Write::Create {
                    values: vec![
                        ("id".into(), Value::Text("11".into())),
                        ("s".into(), Value::Text("b".into())),
                    ],
                },
            ],
        )
        .unwrap();
    assert_eq!(
        out.outcomes,
        [
            WriteOutcome::Created(Key(vec![Value::Integer(10)])),
            WriteOutcome::Created(Key(vec![Value::Integer(11)]))
        ]
    );
}

fn db() -> (tempfile::TempDir, SqliteConnector, ReadSpec) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let c = Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT NOT NULL, b BLOB, n);
         INSERT INTO t VALUES (1, 9223372036854775807, 0.30000000000000004, 'x', x'00ff', NULL);",
    )
    .unwrap();
    let conn = SqliteConnector::open("t", &path).unwrap();
    let spec = ReadSpec {
        collection: "t".into(),
        key: vec!["id".into()],
        columns: ["i", "r", "s", "b", "n"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        since: None,
        range: None,
    };
    (dir, conn, spec)
}

#[test]
fn values_round_trip_exactly() {
    let (_d, mut c, spec) = db();
    let values: Vec<(Name, Value)> = vec![
        ("i".into(), Value::Integer(i64::MIN)),
        ("r".into(), Value::Real(1e-300)),
        ("s".into(), Value::Text("ünïcode".into())),
        ("b".into(), Value::Blob(vec![0, 1, 2])),
        ("n".into(), Value::Null),
    ];
    let out = c
        .apply(
            &spec,
            &[Write::Create {
                values: values.clone(),
            }],
        )
        .unwrap()
        .outcomes;
    let WriteOutcome::Created(key) = &out[0] else {
        panic!("{out:?}")
    };
    let rec = c.fetch(&spec, std::slice::from_ref(key)).unwrap().remove(0);
    assert_eq!(
        rec.values,
        values.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    );
}

#[test]
fn update_is_skipped_when_the_row_changed_after_it_was_read() {
    let (_d, mut c, spec) = db();
    let key = Key::single(Value::Integer(1));
    let stale = Write::Update {
        key: key.clone(),
        set: vec![("s".into(), Value::Text("new".into()))],
        expect: vec![("s".into(), Value::Text("not what is there".into()))],
        version: None,
    };
    let fresh = Write::Update {
        key: key.clone(),
        set: vec![("n".into(), Value::Integer(5))],
        expect: vec![("n".into(), Value::Null)],
        version: None,
    };
    let result = c.apply(&spec, &[stale, fresh]).unwrap();
    assert_eq!(
        result.outcomes,
        vec![WriteOutcome::Stale, WriteOutcome::Applied]
    );
    // Neither is read back: the stale one did nothing, the applied one is stored as
    // sent (an integer into an INTEGER column, no trigger).
    assert_eq!(result.stored, [None, None]);
    let rec = c
        .fetch(&spec, std::slice::from_ref(&key))
        .unwrap()
        .remove(0);
    assert_eq!(rec.values[2], Value::Text("x".into()));
    assert_eq!(rec.values[4], Value::Integer(5));
    // WHEN a trigger rewrites what it is given THEN the applied update is read back
    // as stored, inside the write's transaction.
    c.conn
        .execute_batch(
            "CREATE TRIGGER twice AFTER UPDATE OF n ON t WHEN new.n < 100
             BEGIN UPDATE t SET n = new.n * 100 WHERE id = new.id; END;",
        )
        .unwrap();
    let again = Write::Update {
        key: key.clone(),
        set: vec![("n".into(), Value::Integer(7))],
        expect: vec![("n".into(), Value::Integer(5))],
        version: None,
    };
    let result = c.apply(&spec, &[again]).unwrap();
    let stored = result.stored[0]
        .as_ref()
        .expect("read back under a trigger");
    assert_eq!(stored.key, key);
    assert_eq!(stored.values[4], Value::Integer(700));
}

#[test]
fn a_constraint_violation_rejects_one_write_and_keeps_the_rest() {
    let (_d, mut c, spec) = db();
    let bad = Write::Create {
        values: vec![("s".into(), Value::Null)],
    };
    let good = Write::Create {
        values: vec![("s".into(), Value::Text("ok".into()))],
    };
    let out = c.apply(&spec, &[bad, good]).unwrap().outcomes;
    assert!(
        matches!(&out[0], WriteOutcome::Rejected(r) if r.contains("NOT NULL")),
        "{out:?}"
    );
    assert!(matches!(out[1], WriteOutcome::Created(_)));
    let mut n = 0;
    c.scan(&spec, 1, &mut |b| {
        n += b.len();
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn a_missing_file_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.db");
    assert!(SqliteConnector::open("x", &path).is_err());
    assert!(!path.exists());
}
