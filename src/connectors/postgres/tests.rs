use super::*;

fn text_column(name: &str) -> PgColumn {
    PgColumn::new(
        name.into(),
        "text".into(),
        false,
        "text".into(),
        "text".into(),
        false,
    )
}

#[test]
fn copy_text_fields_decode_every_escape_postgresql_accepts() {
    assert_eq!(copy_unescape(b"plain").unwrap(), "plain");
    assert_eq!(
        copy_unescape(b"a\\tb\\nc\\rd\\\\e\\bf\\fg\\vh").unwrap(),
        "a\tb\nc\rd\\e\x08f\x0cg\x0bh"
    );
    assert_eq!(
        copy_unescape(b"\\101\\7x\\x41\\x4g").unwrap(),
        "A\x07xA\x04g"
    );
    assert_eq!(copy_unescape(b"\\.\\q").unwrap(), ".q");
    assert!(
        copy_unescape(b"\\377").is_err(),
        "a lone 0xff byte is not UTF-8"
    );
}

#[test]
fn a_copy_line_becomes_a_record_with_nulls_and_its_field_count_checked() {
    let cols = [text_column("id"), text_column("a"), text_column("b")];
    let r = copy_line_record(b"k\\\\1\t\\N\tx\\ty\n", &cols, 1).unwrap();
    assert_eq!(r.key, Key(vec![Value::Text("k\\1".into())]));
    assert_eq!(r.values, vec![Value::Null, Value::Text("x\ty".into())]);
    let short = copy_line_record(b"k\tv", &cols, 1).unwrap_err();
    assert!(short.contains("fewer fields"), "{short}");
    let long = copy_line_record(b"k\ta\tb\tc", &cols, 1).unwrap_err();
    assert!(long.contains("more fields"), "{long}");
}

/// A client of the test server, or `None` (skipped, said why) when none is configured.
fn test_server() -> Option<Client> {
    let Ok(url) = std::env::var("SYNCLINE_TEST_PG_URL") else {
        eprintln!("skipped: set SYNCLINE_TEST_PG_URL=postgres://root@127.0.0.1:5432/test to run");
        return None;
    };
    Some(tls::connect(&url).expect("SYNCLINE_TEST_PG_URL is set, but PostgreSQL cannot be reached"))
}

#[test]
fn the_servers_errors_are_classified_for_retrying_by_their_codes() {
    let Some(mut client) = test_server() else {
        return;
    };
    let raised = |client: &mut Client, code: &str| {
        let e = client
            .batch_execute(&format!(
                "DO $$ BEGIN RAISE EXCEPTION 'raised' USING ERRCODE = '{code}'; END $$"
            ))
            .unwrap_err();
        system_error(e)
    };
    assert_eq!(raised(&mut client, "40001").failure, Failure::Transient);
    assert_eq!(raised(&mut client, "40P01").failure, Failure::Transient);
    assert_eq!(raised(&mut client, "55P03").failure, Failure::Transient);
    let duplicate = raised(&mut client, "23505");
    assert_eq!(duplicate.failure, Failure::Other);
    assert_eq!(duplicate.message, "raised");
    assert!(
        std::error::Error::source(&duplicate).is_some_and(|s| s.is::<postgres::Error>()),
        "the driver's error is kept as the source"
    );

    // A session the server ends is lost, and says so.
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut other = test_server().unwrap();
    other
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let e = system_error(client.batch_execute("SELECT 1").unwrap_err());
    assert_eq!(e.failure, Failure::Lost);
    assert!(e.to_string().starts_with("the connection was lost"), "{e}");
}
