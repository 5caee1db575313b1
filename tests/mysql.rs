//! The `mysql` connector against the real MariaDB server (`SYNCLINE_TEST_MYSQL_URL`,
//! e.g. `mysql://root@127.0.0.1:3306/test`), and across kinds with PostgreSQL
//! (`SYNCLINE_TEST_PG_URL`). Each test makes and drops its own databases.

mod support;

use mysql::prelude::Queryable;
use support::{Fixture, TempDatabase, server_url, writes};
use syncline::engine::RunOptions;

fn my() -> Option<TempDatabase> {
    server_url(
        "SYNCLINE_TEST_MYSQL_URL",
        "mysql://root@127.0.0.1:3306/test",
    )
    .map(|u| TempDatabase::mysql(&u))
}

fn pg() -> Option<TempDatabase> {
    server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    )
    .map(|u| TempDatabase::postgres(&u))
}

fn fixture(config: &str) -> Fixture {
    let f = Fixture::new("", "", "");
    std::fs::write(f.config_path(), config).unwrap();
    f
}

fn systems(pg: &TempDatabase, my: &TempDatabase) -> String {
    format!(
        "[systems.crm]\nkind = \"postgres\"\nurl = \"{}\"\n[systems.billing]\nkind = \"mysql\"\nurl = \"{}\"\n",
        pg.url, my.url
    )
}

#[test]
fn every_type_round_trips_postgres_to_mariadb_and_a_second_run_writes_nothing() {
    let (Some(pg), Some(my)) = (pg(), my()) else {
        return;
    };
    let mut c = pg.pg_client();
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE TABLE src (id bigint PRIMARY KEY, i int, n numeric(12,2), big numeric, f float8, t text, v varchar(20), b bool,
           d date, ts timestamp, tz timestamptz, j jsonb, js json, u uuid, by bytea, m mood);
         INSERT INTO src VALUES
           (1, -2147483648, 1234567890.12, 12345678901234567890.000000000000000001, 0.1, 'ünïcödé ''q'' \\ x', 'short', true,
            '2026-02-28', '2026-11-26 10:00:00.123456', '2026-11-26 10:00:00.5+02', '{\"a\": [1, 2.5, null]}', '[1, 2,  3]',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\x00ff10', 'happy'),
           (2, NULL, -0.01, NULL, 1e300, '', NULL, false, '1000-01-01', NULL, '1970-01-01 00:00:01+00', 'null', NULL, NULL, '\\x', 'sad'),
           (3, 0, 0, 1e-20, -2.5, 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    )
    .unwrap();
    let mut m = my.mysql_conn();
    m.query_drop(
        "CREATE TABLE dst (id bigint PRIMARY KEY, i int, n decimal(12,2), big decimal(65,30), f double, t text, v varchar(20),
           b tinyint(1), d date, ts datetime(6), tz datetime(6), j json, js json, u uuid, `by` blob, m enum('sad','ok','happy'))",
    )
    .unwrap();
    let fields = "id = {}\ni = {}\nn = {}\nbig = {}\nf = {}\nt = {}\nv = {}\nb = {}\nd = {}\nts = {}\ntz = {}\nj = {}\njs = {}\nu = {}\nby = {}\nm = {}";
    let f = fixture(&format!(
        "{}[links.t]\nleft = \"crm.src\"\nright = \"billing.dst\"\non_delete = {{ left = \"propagate\" }}\n[links.t.fields]\n{fields}\n",
        systems(&pg, &my)
    ));
    let r = f.run();
    assert_eq!(
        (r.links[0].to_right.created, r.links[0].to_right.rejected),
        (3, 0),
        "{:?}",
        r.links[0]
    );
    // Exact on the other side: decimals keep every digit, timestamps their microseconds
    // (timestamptz in UTC), uuid and enum their text.
    let row: (String, String, String, String, String, String, String) = m
        .query_first("SELECT CAST(n AS CHAR), CAST(big AS CHAR), CAST(ts AS CHAR), CAST(tz AS CHAR), CAST(u AS CHAR), m, HEX(`by`) FROM dst WHERE id = 1")
        .unwrap()
        .unwrap();
    assert_eq!(row.0, "1234567890.12");
    assert_eq!(row.1, "12345678901234567890.000000000000000001000000000000");
    assert_eq!(row.2, "2026-11-26 10:00:00.123456");
    assert_eq!(row.3, "2026-11-26 08:00:00.500000");
    assert_eq!(row.4, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(row.5, "happy");
    assert_eq!(row.6, "00FF10");
    // Every row and column, NULLs, '', 1e300, year 1000 and JSON null included.
    let dump: Vec<String> = m
        .query(
            "SELECT CONCAT_WS('|', id, COALESCE(CAST(i AS CHAR), 'NULL'), CAST(n AS CHAR), COALESCE(CAST(big AS CHAR), 'NULL'),
                COALESCE(CAST(f AS CHAR), 'NULL'), COALESCE(t, 'NULL'), COALESCE(v, 'NULL'), COALESCE(CAST(b AS CHAR), 'NULL'),
                COALESCE(CAST(d AS CHAR), 'NULL'), COALESCE(CAST(ts AS CHAR), 'NULL'), COALESCE(CAST(tz AS CHAR), 'NULL'),
                COALESCE(j, 'NULL'), COALESCE(js, 'NULL'), COALESCE(CAST(u AS CHAR), 'NULL'), COALESCE(HEX(`by`), 'NULL'),
                COALESCE(m, 'NULL')) FROM dst ORDER BY id",
        )
        .unwrap();
    assert_eq!(
        dump,
        [
            "1|-2147483648|1234567890.12|12345678901234567890.000000000000000001000000000000|0.1|ünïcödé 'q' \\ x|short|1|2026-02-28|2026-11-26 10:00:00.123456|2026-11-26 08:00:00.500000|{\"a\":[1,2.5,null]}|[1,2,3]|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|00FF10|happy",
            // '' stays '', JSON null is not SQL NULL, empty bytes are not NULL.
            "2|NULL|-0.01|NULL|1e300||NULL|0|1000-01-01|NULL|1970-01-01 00:00:01.000000|null|NULL|NULL||sad",
            "3|0|0.00|0.000000000000000000010000000000|-2.5|x|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL|NULL",
        ]
    );
    assert_eq!(writes(&f.run()), 0, "a second run must write nothing");
    // A value the column cannot hold exactly is quarantined, never rounded.
    c.batch_execute(
        "ALTER TABLE src ALTER COLUMN n TYPE numeric; UPDATE src SET n = 1.005 WHERE id = 3",
    )
    .unwrap();
    let r = f.run();
    assert_eq!(r.links[0].to_right.rejected, 1);
    let q = f.store().quarantine(Some("t")).unwrap();
    assert!(
        q[0].reason.contains("does not fit decimal(12,2)"),
        "{}",
        q[0].reason
    );
    let n: String = m
        .query_first("SELECT CAST(n AS CHAR) FROM dst WHERE id = 3")
        .unwrap()
        .unwrap();
    assert_eq!(n, "0.00");
}

const CONTACTS_PG: &str = "CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text, status text, notes text);
    INSERT INTO contacts (email, name, notes) VALUES ('a@x.org', 'Ann', 'n'), ('b@x.org', 'Bob', 'n'), ('c@x.org', 'Cy', 'n');";
const CUSTOMERS_MY: &str = "CREATE TABLE customers (cid bigint AUTO_INCREMENT PRIMARY KEY, email varchar(200) NOT NULL, full_name text,
    status varchar(20) NOT NULL DEFAULT 'trial', notes text, crm_id varchar(40))";
const LINK: &str = "[links.c]\nleft = \"crm.contacts\"\nright = \"billing.customers\"\nleft_key = \"id\"\nright_key = \"cid\"\nmode = \"two-way\"
match_on = [\"email\"]\nright_ref = \"crm_id\"\non_delete = { left = \"propagate\", right = \"propagate\" }
[links.c.fields]\nemail = { owner = \"left\" }\nname = { right = \"full_name\", owner = \"left\" }\nstatus = { owner = \"right\" }
notes = { owner = \"both\", conflict = \"manual\" }\n";

#[test]
fn two_way_postgres_and_mariadb_with_write_back_and_conflicts() {
    let (Some(pg), Some(my)) = (pg(), my()) else {
        return;
    };
    let mut c = pg.pg_client();
    c.batch_execute(CONTACTS_PG).unwrap();
    let mut m = my.mysql_conn();
    m.query_drop(CUSTOMERS_MY).unwrap();
    m.query_drop("INSERT INTO customers (email, full_name, status, notes) VALUES ('B@X.org', 'Bob', 'active', 'n'), ('d@x.org', 'Dee', 'past_due', NULL)").unwrap();
    let f = fixture(&format!("{}{LINK}", systems(&pg, &my)));
    let r = f.run();
    let l = &r.links[0];
    assert_eq!((l.to_right.created, l.to_left.created), (2, 1), "{l:?}");
    // billing's default status comes back to the CRM in the same run; then all is quiet
    assert_eq!(writes(&f.run()), 0);
    let status: Option<String> = c
        .query_one("SELECT status FROM contacts WHERE email = 'b@x.org'", &[])
        .unwrap()
        .get(0);
    assert_eq!(status.as_deref(), Some("active"));
    // write-back: billing owns status
    m.query_drop("UPDATE customers SET status = 'cancelled' WHERE email = 'd@x.org'")
        .unwrap();
    // a conflict: both edit notes
    c.batch_execute("UPDATE contacts SET notes = 'left' WHERE email = 'a@x.org'")
        .unwrap();
    m.query_drop("UPDATE customers SET notes = 'right' WHERE email = 'a@x.org'")
        .unwrap();
    let r = f.run();
    assert_eq!(
        (r.links[0].to_left.updated, r.links[0].conflicts),
        (1, 1),
        "{:?}",
        r.links[0]
    );
    let status: Option<String> = c
        .query_one("SELECT status FROM contacts WHERE email = 'd@x.org'", &[])
        .unwrap()
        .get(0);
    assert_eq!(status.as_deref(), Some("cancelled"));
}

#[test]
fn a_concurrent_update_on_mariadb_is_not_overwritten() {
    let (Some(pg), Some(my)) = (pg(), my()) else {
        return;
    };
    pg.pg_client().batch_execute(CONTACTS_PG).unwrap();
    my.mysql_conn().query_drop(CUSTOMERS_MY).unwrap();
    let f = fixture(&format!(
        "{}{}",
        systems(&pg, &my),
        LINK.replace("conflict = \"manual\"", "conflict = \"left-wins\"")
    ));
    f.run();
    pg.pg_client()
        .batch_execute("UPDATE contacts SET notes = 'from crm' WHERE email = 'a@x.org'")
        .unwrap();
    let url = my.url.clone();
    let mut hook = |_: &str| {
        let mut other = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        other
            .query_drop("UPDATE customers SET notes = 'typed meanwhile' WHERE email = 'a@x.org'")
            .unwrap();
    };
    let r = f.run_with(RunOptions {
        between_plan_and_apply: Some(&mut hook),
        ..Default::default()
    });
    assert_eq!(r.links[0].to_right.stale_skipped, 1);
    let notes: String = my
        .mysql_conn()
        .query_first("SELECT notes FROM customers WHERE email = 'a@x.org'")
        .unwrap()
        .unwrap();
    assert_eq!(notes, "typed meanwhile");
}

#[test]
fn a_killed_mariadb_connection_is_retried_without_a_partial_batch() {
    let (Some(pg), Some(my)) = (pg(), my()) else {
        return;
    };
    pg.pg_client()
        .batch_execute("CREATE TABLE contacts (id bigserial PRIMARY KEY, email text NOT NULL, name text, status text, notes text);
                        INSERT INTO contacts (email) SELECT 'p' || g || '@x.org' FROM generate_series(1, 300) g;")
        .unwrap();
    my.mysql_conn().query_drop(CUSTOMERS_MY).unwrap();
    let f = fixture(&format!(
        "{}{}",
        systems(&pg, &my),
        LINK.replace("mode = \"two-way\"", "mode = \"two-way\"\nbatch_size = 100")
    ));
    let url = my.url.clone();
    let db = my.name().to_string();
    let mut hook = |_: &str| {
        let mut other = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
        // syncline's connections, idle between plan and apply. Only idle ones: MariaDB
        // 10.11 was seen to crash killing a connection inside an information_schema
        // query (another test's, or this one's own closing connections).
        let ids: Vec<u64> = other
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID() AND COMMAND = 'Sleep'",
                (db.clone(),),
            )
            .unwrap();
        assert!(!ids.is_empty());
        for id in ids {
            match other.query_drop(format!("KILL {id}")) {
                // A connection that closed since it was listed (a test's own, dropped).
                Err(mysql::Error::MySqlError(e)) if e.code == 1094 => {}
                done => done.unwrap(),
            }
        }
    };
    let r = f.run_with(RunOptions {
        between_plan_and_apply: Some(&mut hook),
        ..Default::default()
    });
    assert_eq!(r.links[0].to_right.created, 300);
    let n: u64 = my
        .mysql_conn()
        .query_first("SELECT count(*) FROM customers")
        .unwrap()
        .unwrap();
    assert_eq!(n, 300);
    f.run();
    assert_eq!(writes(&f.run()), 0);
}

#[test]
fn ssl_mode_required_never_falls_back_to_plain_text() {
    let Some(my) = my() else { return };
    let mut conn = my.mysql_conn();
    let have_ssl: Option<(String, String)> =
        conn.query_first("SHOW VARIABLES LIKE 'have_ssl'").unwrap();
    conn.query_drop("CREATE TABLE a (id int PRIMARY KEY, note text); CREATE TABLE b (id int PRIMARY KEY, note text); INSERT INTO a VALUES (1, 'x')").unwrap();
    // A password in the URL must never reach the message, whatever happens.
    let url = my.url.replacen("://root@", "://root:s3cret-pw@", 1);
    let config = |mode: &str| {
        format!(
            "[systems.crm]\nkind = \"mysql\"\nurl = \"{url}?ssl-mode={mode}\"\n[systems.billing]\nkind = \"mysql\"\nurl = \"{}\"\n[links.n]\nleft = \"crm.a\"\nright = \"billing.b\"\n[links.n.fields]\nid = {{}}\nnote = {{}}\n",
            my.url
        )
    };
    let f = fixture(&config("REQUIRED"));
    let (code, stderr) = support::run_binary(f.path());
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
    if have_ssl.is_some_and(|(_, v)| v == "YES") {
        // A server with TLS: the link runs over it.
        assert_eq!(code, Some(0), "{stderr}");
    } else {
        // This server has no TLS: REQUIRED refuses to connect rather than send in clear.
        assert_eq!(code, Some(1), "{stderr}");
        assert!(stderr.contains("system `crm` (mysql)"), "{stderr}");
        let rows: Vec<i64> = my.mysql_conn().query("SELECT id FROM b").unwrap();
        assert!(rows.is_empty(), "nothing may be written: {rows:?}");
    }
    // A mode that does not exist is named in the error.
    let f = fixture(&config("SOMETIMES"));
    let (_, stderr) = support::run_binary(f.path());
    assert!(stderr.contains("ssl-mode `SOMETIMES`"), "{stderr}");
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

/// A private MariaDB with TLS on, on a free port, in a temporary folder (the shared
/// server runs with TLS off), with a test CA and a server certificate for 127.0.0.1.
struct TlsMariaDb {
    dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
}

impl TlsMariaDb {
    fn start() -> TlsMariaDb {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let p = |f: &str| dir.path().join(f).display().to_string();
        let sh = |cmd: &str| {
            let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(&format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout {ca_key} -out {ca} -subj /CN=syncline-test-ca -days 2 &&
             openssl req -newkey rsa:2048 -nodes -keyout {key} -out {csr} -subj /CN=localhost &&
             printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > {ext} &&
             openssl x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -out {cert} -days 2 -extfile {ext}",
            ca_key = p("ca.key"), ca = p("ca.pem"), key = p("server.key"), csr = p("server.csr"),
            ext = p("ext.cnf"), cert = p("server.pem"),
        ));
        sh(&format!(
            "mariadb-install-db --no-defaults --datadir={} --user=root",
            p("data")
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("/usr/sbin/mariadbd")
            .args([
                "--no-defaults".to_string(),
                format!("--datadir={}", p("data")),
                "--user=root".into(),
                format!("--port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--socket={}", p("sock")),
                format!("--ssl-cert={}", p("server.pem")),
                format!("--ssl-key={}", p("server.key")),
                "--skip-grant-tables".into(),
            ])
            .stderr(std::fs::File::create(p("server.log")).unwrap())
            .spawn()
            .expect("mariadbd is installed");
        let db = TlsMariaDb { dir, server, port };
        let url = db.url("");
        for _ in 0..100 {
            if mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).is_ok() {
                return db;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!(
            "the private TLS MariaDB did not start: {}",
            std::fs::read_to_string(db.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn url(&self, query: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql{query}", self.port)
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    fn tls_handshakes(&self) -> u64 {
        let mut c = mysql::Conn::new(mysql::Opts::from_url(&self.url("")).unwrap()).unwrap();
        let row: Option<(String, u64)> = c
            .query_first("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
            .unwrap();
        row.unwrap().1
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

#[test]
fn tls_is_verified_as_ssl_mode_says_against_a_server_with_tls() {
    // Gated like the other MariaDB tests: CI sets the variable and has the server's binaries.
    if my().is_none() {
        return;
    }
    let server = TlsMariaDb::start();
    let mut c = mysql::Conn::new(mysql::Opts::from_url(&server.url("")).unwrap()).unwrap();
    c.query_drop("CREATE DATABASE t; CREATE TABLE t.a (id int PRIMARY KEY, note text); CREATE TABLE t.b (id int PRIMARY KEY, note text); INSERT INTO t.a VALUES (1, 'x')").unwrap();
    let config = |query: &str| {
        let url = server.url(query).replace("/mysql", "/t");
        format!(
            "[systems.crm]\nkind = \"mysql\"\nurl = \"{url}\"\n[systems.billing]\nkind = \"mysql\"\nurl = \"{url}\"\n[links.n]\nleft = \"crm.a\"\nright = \"billing.b\"\n[links.n.fields]\nid = {{}}\nnote = {{}}\n"
        )
    };
    // Without the test CA, the certificate cannot be verified: no connection, no write.
    let f = fixture(&config("?ssl-mode=VERIFY_IDENTITY"));
    let (code, stderr) = support::run_binary(f.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // With it, the host name and the chain check out, and the link runs over TLS.
    let before = server.tls_handshakes();
    let f = fixture(&config(&format!(
        "?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        server.ca()
    )));
    let (code, stderr) = support::run_binary(f.path());
    assert_eq!(code, Some(0), "{stderr}");
    let rows: Vec<(i64, String)> = c.query("SELECT id, note FROM t.b").unwrap();
    assert_eq!(rows, vec![(1, "x".to_string())]);
    // Both systems' connections were TLS handshakes (the count includes none of ours).
    assert!(server.tls_handshakes() >= before + 2);
}
