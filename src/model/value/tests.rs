use super::*;

#[test]
fn encoding_round_trips_every_type_exactly() {
    let values = [
        Value::Null,
        Value::Integer(i64::MIN),
        Value::Real(0.1 + 0.2),
        Value::Real(f64::NAN),
        Value::Text("a\u{1f}b\\u".into()),
        Value::Blob(vec![0, 255, 16]),
        Value::Bool(true),
        Value::Numeric("-0012.500".into()),
        Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()),
        Value::Timestamp(parse_naive_timestamp("2026-11-26 10:00:00.123456").unwrap()),
        Value::TimestampTz(parse_timestamptz("2026-11-26 10:00:00.5+02").unwrap()),
        Value::Json(serde_json::json!({"a": [1, 2.5, null]})),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
    ];
    for v in &values {
        let back = Value::decode(&v.encode()).unwrap();
        assert_eq!(&back, v, "{v:?}");
        // Bases hold values as JSON strings of the same form, escaped by serde_json.
        let json = serde_json::to_string(v).unwrap();
        assert_eq!(json, serde_json::to_string(&v.encode()).unwrap(), "{v:?}");
        assert_eq!(&serde_json::from_str::<Value>(&json).unwrap(), v, "{v:?}");
    }
    let key = Key(values.to_vec());
    assert_eq!(Key::decode(&key.encode()).unwrap(), key);
}

#[test]
fn stored_forms_stay_what_earlier_releases_wrote() {
    // State stores hold these forms: a change here would orphan every id map unless
    // a schema migration re-encodes them (v4 did, for integer parts).
    let key = Key(vec![Value::Text("a\u{1f}b\\u".into()), Value::Integer(7)]);
    assert_eq!(key.encode(), "Ta\\ub\\\\u\u{1f}Pa7");
    let int = |n: i64| Key::single(Value::Integer(n)).encode();
    assert_eq!(
        [
            int(0),
            int(42),
            int(-1),
            int(-10),
            int(i64::MAX),
            int(i64::MIN)
        ],
        [
            "Pa0",
            "Pb42",
            "Ms8",
            "Mr89",
            "Ps9223372036854775807",
            "Ma0776627963145224191"
        ]
    );
    // Integer parts as stores before v4 held them still decode.
    assert_eq!(Key::decode("I-7").unwrap(), Key::single(Value::Integer(-7)));
    for not_canonical in [
        "Pb05",
        "Pa",
        "Pc12",
        "Ms9",
        "Mr98",
        "Mt",
        "P",
        "Pt99999999999999999999",
    ] {
        assert!(Key::decode(not_canonical).is_err(), "{not_canonical}");
    }
    assert_eq!(
        serde_json::to_string(&key).unwrap(),
        serde_json::to_string(&key.encode()).unwrap()
    );
    let v = Value::Numeric("12.50".into());
    assert_eq!(serde_json::to_string(&v).unwrap(), "\"D12.50\"");
    let back: Key = serde_json::from_str(&serde_json::to_string(&key).unwrap()).unwrap();
    assert_eq!(back, key);
}

proptest::proptest! {
    /// Integer keys sort in the state store's indexes as their numbers do, so keys
    /// read in key order are appended there, and every form decodes back.
    #[test]
    fn integer_keys_encode_in_numeric_order(a: i64, b: i64, tail in "[a-z\u{1f}\\\\]{0,3}") {
        let key = |n: i64| Key(vec![Value::Integer(n), Value::Text(tail.clone())]);
        let (ea, eb) = (key(a).encode(), key(b).encode());
        proptest::prop_assert_eq!(ea.cmp(&eb), a.cmp(&b));
        proptest::prop_assert_eq!(Key::decode(&ea).unwrap(), key(a));
        proptest::prop_assert_eq!(Key::decode(&format!("I{a}")).unwrap(), Key::single(Value::Integer(a)));
    }

    /// The fast path for the common timestamp forms reads what chrono's parser reads.
    #[test]
    fn timestamps_read_fast_as_chrono_reads_them(
        secs in -2_000_000_000i64..100_000_000_000,
        nanos in 0u32..1_000_000_000,
        digits in 0usize..10,
        t in proptest::bool::ANY,
        zone in proptest::sample::select(vec!["", "Z", "+00", "-05", "+05:30", "+0530", "-03:30:15", "+14", "+24", "+05:60", "+5", "x"]),
    ) {
        let stamp = chrono::DateTime::from_timestamp(secs, nanos).unwrap().naive_utc();
        let mut text = stamp.format(if t { "%Y-%m-%dT%H:%M:%S" } else { "%Y-%m-%d %H:%M:%S" }).to_string();
        if digits > 0 {
            text.push('.');
            text.push_str(&format!("{nanos:09}")[..digits]);
        }
        text.push_str(zone);
        proptest::prop_assert_eq!(parse_timestamptz(&text), general_timestamptz(&text), "{}", text);
        proptest::prop_assert_eq!(parse_naive_timestamp(&text), general_naive_timestamp(&text), "{}", text);
    }

    /// A part that is not an integer's sortable form is refused, not misread.
    #[test]
    fn malformed_sortable_integers_are_refused(width in "[a-z]", digits in "[0-9]{0,21}", negative: bool) {
        let tag = if negative { "M" } else { "P" };
        let encoded = format!("{tag}{width}{digits}");
        if let Ok(Key(parts)) = Key::decode(&encoded) {
            let [Value::Integer(n)] = parts.as_slice() else {
                return Err(proptest::test_runner::TestCaseError::fail("not one integer"));
            };
            proptest::prop_assert_eq!(Key::single(Value::Integer(*n)).encode(), encoded);
        }
    }
}

#[test]
fn timestamps_read_in_every_form_a_system_prints() {
    let utc = |s: &str| parse_timestamptz(s).map(|d| d.to_rfc3339());
    let ten = Some("2026-11-26T10:00:00+00:00".to_string());
    for form in [
        "2026-11-26 10:00:00+00",
        "2026-11-26 12:00:00+02",
        "2026-11-26 15:30:00+05:30",
        "2026-11-26T10:00:00Z",
        "2026-11-26T05:00:00-05:00",
        "2026-11-26 10:00:00",
        " 2026-11-26T10:00:00 ",
    ] {
        assert_eq!(utc(form), ten, "{form}");
    }
    assert_eq!(
        utc("2026-11-26 10:00:00.123456+00"),
        Some("2026-11-26T10:00:00.123456+00:00".into())
    );
    assert_eq!(utc("2026-11-26 10:00"), None);
    assert_eq!(utc("infinity"), None);
    assert_eq!(
        parse_naive_timestamp("2026-11-26 10:00:00.5").map(|n| n.to_string()),
        Some("2026-11-26 10:00:00.500".into())
    );
}

#[test]
fn integer_equals_exact_real_only() {
    assert_eq!(Value::Integer(3), Value::Real(3.0));
    assert_ne!(Value::Integer(3), Value::Real(3.5));
    assert_ne!(Value::Integer(i64::MAX), Value::Real(9.3e18));
    // Text is a number only in its canonical form.
    assert_eq!(Value::Text("3".into()), Value::Integer(3));
    assert_ne!(Value::Text("3.0".into()), Value::Integer(3));
}

#[test]
fn equal_values_have_one_canonical_form() {
    assert_eq!(Value::Numeric("12.50".into()), Value::Real(12.5));
    assert_eq!(Value::Numeric("12.50".into()), Value::Text("12.5".into()));
    assert_ne!(Value::Numeric("12.50".into()), Value::Text("12.50".into()));
    assert_eq!(Value::Numeric("-0.0".into()), Value::Integer(0));
    assert_ne!(
        Value::Numeric("0.1".into()),
        Value::Numeric("0.10000000000000001".into())
    );
    assert_eq!(Value::Bool(true), Value::Integer(1));
    assert_eq!(Value::Bool(true), Value::Real(1.0));
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
    assert_eq!(Value::Date(day), Value::Text("2026-01-02".into()));
    assert_ne!(Value::Date(day), Value::Text(" 2026-01-02".into()));
    let tz = parse_timestamptz("2026-11-26 10:00:00+00").unwrap();
    assert_eq!(Value::TimestampTz(tz), Value::Timestamp(tz.naive_utc()));
    assert_eq!(
        Value::TimestampTz(tz),
        Value::Text("2026-11-26 10:00:00".into())
    );
    assert_eq!(
        Value::Json(serde_json::json!({"a": 1})),
        Value::Text("{\"a\":1}".into())
    );
    assert_eq!(
        Value::Uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into()),
        Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    assert_ne!(Value::Null, Value::Text(String::new()));
    assert_eq!(Value::Real(f64::NAN), Value::Real(f64::NAN));
}

#[test]
fn the_same_value_in_another_representation_means_the_same() {
    let means =
        |a: Value, b: Value| assert!(a.same_meaning(&b) && b.same_meaning(&a), "{a:?} {b:?}");
    means(Value::Numeric("12.50".into()), Value::Text("12.50".into()));
    means(Value::Numeric("12.50".into()), Value::Real(12.5));
    let tz = parse_timestamptz("2026-11-26 10:00:00+00").unwrap();
    means(
        Value::TimestampTz(tz),
        Value::Text("2026-11-26T10:00:00Z".into()),
    );
    means(
        Value::Json(serde_json::json!({"a": 1})),
        Value::Text("{ \"a\" : 1 }".into()),
    );
    means(
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
        Value::Text("{A0EEBC999C0B4EF8BB6D6BB9BD380A11}".into()),
    );
    assert!(
        !Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
            .same_meaning(&Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12".into()))
    );
    assert!(!Value::Null.same_meaning(&Value::Text(String::new())));
}

use proptest::prelude::{Just, Strategy, any, prop, prop_assert, prop_assert_eq, prop_oneof};

/// Values of every kind, in every representation a system hands over, with texts
/// that are (and that almost are) other kinds' canonical forms: where equality
/// across representations could lose transitivity.
fn any_value() -> impl Strategy<Value = Value> {
    let numbers = prop_oneof![
        (-3i64..4).prop_map(Value::Integer),
        prop::sample::select(vec![
            -1.5,
            0.0,
            -0.0,
            1.0,
            2.5,
            0.1,
            f64::NAN,
            f64::INFINITY
        ])
        .prop_map(Value::Real),
        prop::sample::select(vec!["1", "1.0", "01", "2.50", "-0", "0.1", "x"])
            .prop_map(|n| Value::Numeric(n.into())),
        any::<bool>().prop_map(Value::Bool),
    ];
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
    let noon = day.and_hms_opt(12, 0, 0).unwrap();
    let temporal = prop_oneof![
        Just(Value::Date(day)),
        Just(Value::Timestamp(noon)),
        Just(Value::TimestampTz(noon.and_utc())),
        Just(Value::Timestamp(day.and_hms_opt(0, 0, 0).unwrap())),
    ];
    let texts = prop::sample::select(vec![
        "",
        "1",
        "1.0",
        "2.5",
        "-1.5",
        "0",
        "0.1",
        "true",
        "NaN",
        "2026-01-02",
        " 2026-01-02",
        "2026-01-02 12:00:00",
        "2026-01-02T12:00:00Z",
        "2026-01-02 00:00:00",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{\"a\":1}",
        "{ \"a\": 1 }",
        "[1]",
        "x",
    ])
    .prop_map(|t| Value::Text(t.into()));
    let others = prop_oneof![
        Just(Value::Null),
        Just(Value::Blob(vec![1, 2])),
        Just(Value::Json(serde_json::json!({"a": 1}))),
        Just(Value::Json(serde_json::json!([1]))),
        Just(Value::Json(serde_json::json!(1))),
        Just(Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())),
        Just(Value::Uuid("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into())),
    ];
    prop_oneof![numbers, temporal, texts, others]
}

proptest::proptest! {
    #[test]
    fn equality_is_reflexive_symmetric_and_transitive(
        a in any_value(),
        b in any_value(),
        c in any_value(),
    ) {
        prop_assert!(a == a, "reflexive: {:?}", a);
        prop_assert_eq!(a == b, b == a, "symmetric: {:?} {:?}", a, b);
        if a == b && b == c {
            prop_assert!(a == c, "transitive: {:?} = {:?} = {:?}", a, b, c);
        }
        // Equal values mean the same; same_meaning is at least symmetric.
        if a == b {
            prop_assert!(a.same_meaning(&b));
        }
        prop_assert_eq!(a.same_meaning(&b), b.same_meaning(&a));
        // And a value survives the state store's encoding as itself.
        prop_assert!(Value::decode(&a.encode()).is_ok_and(|d| d == a));
    }
}

#[test]
fn empty_means_null_or_blank_text() {
    assert!(Value::Null.is_empty());
    assert!(Value::Text("  ".into()).is_empty());
    assert!(!Value::Integer(0).is_empty());
}
