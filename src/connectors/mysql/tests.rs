use super::message;

#[test]
fn driver_errors_read_as_sentences() {
    let io = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )
    };
    for e in [
        mysql::Error::IoError(io()),
        mysql::Error::CodecError(io().into()),
    ] {
        let text = message(&e);
        assert!(!text.contains("Error {"), "{text}");
        assert!(text.starts_with("the connection failed: "), "{text}");
    }
}

#[test]
fn the_servers_errors_are_classified_for_retrying_by_their_codes() {
    use super::{MysqlConnector, system_error};
    use crate::connectors::Failure;
    use mysql::prelude::Queryable as _;
    let Ok(url) = std::env::var("SYNCLINE_TEST_MYSQL_URL") else {
        eprintln!("skipped: set SYNCLINE_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test to run");
        return;
    };
    let connect = || {
        MysqlConnector::connect("test", &url)
            .expect("SYNCLINE_TEST_MYSQL_URL is set, but MariaDB/MySQL cannot be reached")
            .0
    };
    let mut conn = connect();
    let mut signalled = |errno: u16| {
        system_error(
            conn.query_drop(format!(
                "SIGNAL SQLSTATE '40001' SET MESSAGE_TEXT = 'raised', MYSQL_ERRNO = {errno}"
            ))
            .unwrap_err(),
        )
    };
    assert_eq!(signalled(1213).failure, Failure::Transient, "deadlock");
    assert_eq!(
        signalled(1205).failure,
        Failure::Transient,
        "lock wait timeout"
    );
    let duplicate = signalled(1062);
    assert_eq!(duplicate.failure, Failure::Other);
    assert!(
        duplicate.message.starts_with("raised"),
        "{}",
        duplicate.message
    );

    // A session the server ends is lost.
    let id: u64 = conn.query_first("SELECT CONNECTION_ID()").unwrap().unwrap();
    connect().query_drop(format!("KILL {id}")).unwrap();
    let e = system_error(conn.query_drop("SELECT 1").unwrap_err());
    assert_eq!(e.failure, Failure::Lost, "{e}");
}
