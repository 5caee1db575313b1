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
