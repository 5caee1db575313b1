//! `syncline watch` as an operator runs it: the binary on a free port, scraped and
//! driven over HTTP, stopped by signals. PostgreSQL change feeds against the real server
//! (`SYNCLINE_TEST_PG_URL`), and the dashboard in headless Chromium
//! (`SYNCLINE_TEST_CHROMEDRIVER`).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::servers::free_port;
use support::{Fixture, TempDatabase, server_url};

/// A running `syncline watch`, killed if a test ends without stopping it.
struct Watcher {
    child: Option<Child>,
    port: u16,
    log: std::path::PathBuf,
}

impl Watcher {
    fn start(dir: &Path, port: u16) -> Watcher {
        let log = dir.join(format!(
            "watch-{}.log",
            Instant::now().elapsed().as_nanos() ^ u128::from(port)
        ));
        let child = Command::new(assert_cmd::cargo::cargo_bin("syncline"))
            .current_dir(dir)
            .args(["watch", "--listen", &format!("127.0.0.1:{port}")])
            .env_remove("SYNCLINE_CONFIG")
            .env("SYNCLINE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let w = Watcher {
            child: Some(child),
            port,
            log,
        };
        w.wait_for("/healthz", |body| body.starts_with("ok"));
        w
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The body of a GET, whatever its status.
    fn get(&self, path: &str) -> Option<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(&self.url(path))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
    }

    fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(&self.url(path))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut answer = req.send(body).unwrap();
        (
            answer.status().as_u16(),
            answer.body_mut().read_to_string().unwrap(),
        )
    }

    fn wait_for(&self, path: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(body) = self.get(path)
                && ok(&body)
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered as expected; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `ok`; a timeout shows the watcher's log.
    fn until(&self, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        assert_eq!(unsafe_free_kill(pid, signal), 0);
    }

    /// SIGTERM, and the exit code.
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), self.log_text());
            }
            assert!(Instant::now() < deadline, "watch did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_hard(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kill(2)` through the `kill` command: the tests keep to safe code.
fn unsafe_free_kill(pid: i32, signal: i32) -> i32 {
    Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .map_or(1, |s| s.code().unwrap_or(1))
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of a Prometheus sample (first line starting with `series`), or 0.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `syncline run --json` in the fixture's folder: its report.
fn run_json(f: &Fixture) -> serde_json::Value {
    let out = support::syncline(f.path())
        .args(["run", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

const PEOPLE: &str = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, note TEXT);";

fn sqlite_pair(watch: &str) -> Fixture {
    let f = Fixture::new(
        &format!("{PEOPLE} INSERT INTO people VALUES (1, 'Ada', 'first'), (2, 'Grace', 'second');"),
        PEOPLE,
        "",
    );
    f.write_config(&format!(
        "[links.people]\nleft = \"crm.people\"\nright = \"billing.people\"\nmode = \"two-way\"\nevery = \"300ms\"\n\n[links.people.fields]\nname = {{ owner = \"left\" }}\nnote = {{ owner = \"both\", conflict = \"manual\" }}\n\n{watch}"
    ));
    f
}

fn right_name(f: &Fixture, id: i64) -> Option<String> {
    f.right
        .query_row("SELECT name FROM people WHERE id = ?1", [id], |r| r.get(0))
        .ok()
}

#[test]
fn watch_syncs_on_its_schedule_serves_metrics_and_stops_on_sigterm_with_state_committed() {
    let f = sqlite_pair("");
    let w = Watcher::start(f.path(), free_port());
    w.until("the first cycle", Duration::from_secs(30), || {
        right_name(&f, 2).as_deref() == Some("Grace")
    });
    f.left
        .execute("UPDATE people SET name = 'Ada Lovelace' WHERE id = 1", [])
        .unwrap();
    f.left
        .execute("INSERT INTO people VALUES (3, 'Edsger', NULL)", [])
        .unwrap();
    w.until(
        "the edit to reach the right",
        Duration::from_secs(30),
        || right_name(&f, 1).as_deref() == Some("Ada Lovelace") && right_name(&f, 3).is_some(),
    );
    let metrics = w.wait_for("/metrics", |m| {
        metric(
            m,
            "syncline_records_written_total{link=\"people\",direction=\"to_right\",op=\"update\"}",
        ) >= 1.0
    });
    assert!(
        metric(
            &metrics,
            "syncline_records_written_total{link=\"people\",direction=\"to_right\",op=\"create\"}"
        ) >= 3.0,
        "{metrics}"
    );
    assert!(metrics.contains("syncline_run_duration_seconds_bucket{link=\"people\""));
    assert!(
        metric(
            &metrics,
            "syncline_runs_total{link=\"people\",outcome=\"ok\"}"
        ) >= 2.0
    );
    // Values never appear in metrics.
    assert!(!metrics.contains("Lovelace"), "{metrics}");
    let ready = w.get("/readyz").unwrap();
    assert!(ready.contains("\"ready\":true"), "{ready}");
    let links: serde_json::Value = serde_json::from_str(&w.get("/api/links").unwrap()).unwrap();
    assert_eq!(links[0]["link"], "people");
    assert!(links[0]["cycles"].as_u64().unwrap() >= 2);
    let runs: serde_json::Value =
        serde_json::from_str(&w.get("/api/runs?limit=5").unwrap()).unwrap();
    assert!(!runs.as_array().unwrap().is_empty());
    let journal: serde_json::Value =
        serde_json::from_str(&w.get("/api/journal?link=people&key=1").unwrap()).unwrap();
    assert!(
        journal
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["new"] == "Ada Lovelace"),
        "{journal}"
    );
    // Read-only without an admin token.
    let (status, _) = w.post("/api/quarantine/release", None, "{}");
    assert_eq!(status, 403);

    // SIGHUP with a broken config: refused, the running one kept.
    let good = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(f.config_path(), format!("{good}\n[links.people.oops]\n")).unwrap();
    w.signal(libc::SIGHUP);
    w.until(
        "the refused reload to be logged",
        Duration::from_secs(10),
        || w.log_text().contains("config not reloaded"),
    );
    f.left
        .execute("UPDATE people SET name = 'Grace Hopper' WHERE id = 2", [])
        .unwrap();
    w.until(
        "a sync under the kept config",
        Duration::from_secs(30),
        || right_name(&f, 2).as_deref() == Some("Grace Hopper"),
    );
    // SIGHUP with a good config: the links restart under it (here: a new schedule).
    std::fs::write(
        f.config_path(),
        good.replace("every = \"300ms\"", "every = \"200ms\""),
    )
    .unwrap();
    w.signal(libc::SIGHUP);
    w.until("the reload", Duration::from_secs(10), || {
        w.log_text().contains("config reloaded")
    });
    w.wait_for("/api/links", |b| b.contains("\"every_seconds\":0.2"));
    f.left
        .execute(
            "UPDATE people SET name = 'Grace B. Hopper' WHERE id = 2",
            [],
        )
        .unwrap();
    w.until(
        "a sync under the reloaded config",
        Duration::from_secs(30),
        || right_name(&f, 2).as_deref() == Some("Grace B. Hopper"),
    );

    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopped; every cycle committed"), "{log}");
    // Nothing left half-done: the next run writes nothing.
    let report = run_json(&f);
    let link = &report["links"][0];
    for dir in ["to_right", "to_left"] {
        for op in ["created", "updated", "deleted"] {
            assert_eq!(link[dir][op], 0, "{report}");
        }
    }
}

#[test]
fn a_failing_link_backs_off_and_does_not_stop_the_others() {
    let f = sqlite_pair("");
    let good = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        format!(
            "{good}\n[systems.gone]\nkind = \"sqlite\"\npath = \"no-such-dir/x.db\"\n\n[links.broken]\nleft = \"gone.people\"\nright = \"billing.people\"\nevery = \"300ms\"\n[links.broken.fields]\nname = {{ owner = \"left\" }}\n"
        ),
    )
    .unwrap();
    let w = Watcher::start(f.path(), free_port());
    w.until("the healthy link to sync", Duration::from_secs(30), || {
        right_name(&f, 2).as_deref() == Some("Grace")
    });
    let metrics = w.wait_for("/metrics", |m| {
        metric(m, "syncline_errors_total{link=\"broken\",kind=\"system\"}") >= 1.0
    });
    assert!(
        metric(
            &metrics,
            "syncline_runs_total{link=\"people\",outcome=\"ok\"}"
        ) >= 1.0
    );
    let ready = w.get("/readyz").unwrap();
    assert!(ready.contains("broken"), "{ready}");
    std::thread::sleep(Duration::from_secs(2));
    let failures = metric(
        &w.get("/metrics").unwrap(),
        "syncline_runs_total{link=\"broken\",outcome=\"failed\"}",
    );
    // Backing off: 1 s, 2 s, … with jitter, not every 300 ms.
    assert!(
        (1.0..=4.0).contains(&failures),
        "{failures} failures in ~3 s"
    );
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// The SQLite pair synced once, both sides then editing the manual `note` of record 1,
/// and a watcher (with `token` as its admin token) that has seen the conflict.
fn watching_a_conflict(token: &str) -> (Fixture, Watcher) {
    let f = sqlite_pair(&format!("[watch]\nadmin_token = \"{token}\"\n"));
    assert_eq!(
        support::syncline(f.path())
            .arg("run")
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    f.left
        .execute("UPDATE people SET note = 'left says' WHERE id = 1", [])
        .unwrap();
    f.right
        .execute("UPDATE people SET note = 'right says' WHERE id = 1", [])
        .unwrap();
    let w = Watcher::start(f.path(), free_port());
    w.wait_for("/api/conflicts?link=people", |b| b.contains("right says"));
    (f, w)
}

#[test]
fn a_conflict_is_resolved_through_the_api_and_journaled_with_who() {
    let token = "an-admin-token-long-enough";
    let (f, w) = watching_a_conflict(token);
    w.wait_for("/metrics", |m| {
        metric(m, "syncline_conflicts_open{link=\"people\"}") == 1.0
    });
    let (status, body) = w.post(
        "/api/conflicts/resolve",
        Some("wrong-token-wrong-token"),
        r#"{"link":"people","key":"left:1","field":"note","take":"right"}"#,
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = w.post(
        "/api/conflicts/resolve",
        Some(token),
        r#"{"link":"people","key":"left:1","field":"note","take":"right"}"#,
    );
    assert_eq!(status, 200, "{body}");
    w.until(
        "the decision to be written",
        Duration::from_secs(30),
        || {
            f.left
                .query_row("SELECT note FROM people WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .unwrap()
                == "right says"
        },
    );
    let journal = w.get("/api/journal?link=people&key=1").unwrap();
    assert!(
        journal.contains("conflict resolved by an admin via the dashboard from 127.0.0.1"),
        "{journal}"
    );
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}

// ---- PostgreSQL change feeds -------------------------------------------------------

fn pg_url() -> Option<String> {
    server_url(
        "SYNCLINE_TEST_PG_URL",
        "postgres://root@127.0.0.1:5432/test",
    )
}

struct PgFeedFixture {
    f: Fixture,
    db: TempDatabase,
}

/// [`pg_feeds`], run once (slots made, first load done), then `sql` on the database;
/// with a client on it.
fn pg_feeds_then(pg_url: &str, state: &str, sql: &str) -> (PgFeedFixture, postgres::Client) {
    let fixture = pg_feeds(pg_url, state);
    run_json(&fixture.f);
    let mut c = fixture.db.pg_client();
    c.batch_execute(sql).unwrap();
    (fixture, c)
}

/// Two schemas of one fresh database, `crm.people` and `billing.people`, linked two-way
/// with a logical feed on each side; `every` is an hour, so only the feeds start cycles.
fn pg_feeds(pg_url: &str, state: &str) -> PgFeedFixture {
    let db = TempDatabase::postgres(pg_url);
    let mut c = db.pg_client();
    c.batch_execute(
        "CREATE SCHEMA crm; CREATE SCHEMA billing;
         CREATE TABLE crm.people (id int PRIMARY KEY, name text, note text);
         CREATE TABLE billing.people (id int PRIMARY KEY, name text, note text);
         INSERT INTO crm.people VALUES (1, 'Ada', 'a'), (2, 'Grace', 'g');",
    )
    .unwrap();
    let name = db.name().to_string();
    let f = Fixture::with_systems(
        &format!("[systems.pg]\nkind = \"postgres\"\nurl = \"{}\"\n", db.url),
        &format!(
            "{state}[links.people]\nleft = \"pg.crm.people\"\nright = \"pg.billing.people\"\nmode = \"two-way\"\non_delete = {{ left = \"propagate\", right = \"propagate\" }}\nevery = \"1h\"\ndebounce = \"50ms\"\n\n[links.people.fields]\nid = {{}}\nname = {{ owner = \"both\", conflict = \"left-wins\" }}\nnote = {{ owner = \"both\", conflict = \"left-wins\" }}\n\n[links.people.changes]\nleft = {{ feed = \"logical\", slot = \"{name}_l\" }}\nright = {{ feed = \"logical\", slot = \"{name}_r\" }}\n"
        ),
    );
    PgFeedFixture { f, db }
}

fn pg_rows(db: &TempDatabase, table: &str) -> Vec<(i32, Option<String>)> {
    db.pg_client()
        .query(&format!("SELECT id, name FROM {table} ORDER BY id"), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn postgres_changes_arrive_by_logical_replication_and_syncline_writes_do_not_come_back() {
    let Some(url) = pg_url() else { return };
    let PgFeedFixture { f, db } = pg_feeds(&url, "");
    let w = Watcher::start(f.path(), free_port());
    w.until("the first cycle", Duration::from_secs(30), || {
        pg_rows(&db, "billing.people").len() == 2
    });
    let mut c = db.pg_client();
    let runs_before = metric(
        &w.get("/metrics").unwrap(),
        "syncline_runs_total{link=\"people\",outcome=\"ok\"}",
    );
    c.batch_execute(
        "INSERT INTO crm.people VALUES (3, 'Edsger', 'e');
         UPDATE crm.people SET name = 'Ada Lovelace' WHERE id = 1;
         DELETE FROM crm.people WHERE id = 2;",
    )
    .unwrap();
    let started = Instant::now();
    w.until("left changes on the right", Duration::from_secs(10), || {
        pg_rows(&db, "billing.people")
            == vec![(1, Some("Ada Lovelace".into())), (3, Some("Edsger".into()))]
    });
    let took = started.elapsed();
    // The right side edits too: it comes back by the right's feed.
    c.batch_execute("UPDATE billing.people SET note = 'from billing' WHERE id = 3")
        .unwrap();
    w.until(
        "the right's edit on the left",
        Duration::from_secs(10),
        || {
            c.query_one("SELECT note FROM crm.people WHERE id = 3", &[])
                .unwrap()
                .get::<_, Option<String>>(0)
                .as_deref()
                == Some("from billing")
        },
    );
    // Quiet now: syncline's own writes are in both feeds, and start no cycle.
    std::thread::sleep(Duration::from_secs(2));
    let m1 = w.get("/metrics").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let m2 = w.get("/metrics").unwrap();
    let series = "syncline_runs_total{link=\"people\",outcome=\"ok\"}";
    assert_eq!(
        metric(&m1, series),
        metric(&m2, series),
        "cycles ran with nobody editing"
    );
    assert!(
        metric(&m2, series) - runs_before <= 4.0,
        "{} cycles for two edits: writes came back as changes",
        metric(&m2, series) - runs_before
    );
    // Both slots are confirmed past syncline's own writes: nothing waits in them.
    let waiting: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('{}_l', NULL, NULL, 'proto_version', '1', 'publication_names', '{}_l')",
                db.name(),
                db.name()
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0);
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    eprintln!("left change visible on the right after {took:?}");
}

#[test]
fn a_watcher_killed_mid_stream_loses_nothing_and_a_dropped_slot_is_reconciled() {
    let Some(url) = pg_url() else { return };
    let PgFeedFixture { f, db } = pg_feeds(&url, "");
    let w = Watcher::start(f.path(), free_port());
    w.until("the first cycle", Duration::from_secs(30), || {
        pg_rows(&db, "billing.people").len() == 2
    });
    // A stream of inserts; the watcher is killed while they arrive.
    let writer_url = db.url.clone();
    let writer = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&writer_url, postgres::NoTls).unwrap();
        for id in 100..400 {
            c.execute(
                "INSERT INTO crm.people VALUES ($1, $2, NULL)",
                &[&id, &format!("n{id}")],
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    std::thread::sleep(Duration::from_millis(400));
    w.kill_hard();
    writer.join().unwrap();
    let w = Watcher::start(f.path(), free_port());
    w.until("every insert on the right", Duration::from_secs(30), || {
        pg_rows(&db, "billing.people").len() == 302
    });
    // Each record created once: one create journaled per key.
    let out = support::syncline(f.path())
        .args(["log", "--link", "people", "--limit", "100000", "--json"])
        .output()
        .unwrap();
    let journal: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let creates: usize = journal["journal"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["op"] == "create" && e["side"] == "right" && e["status"] == "applied")
        .map(|e| e["records"].as_u64().unwrap_or(1) as usize)
        .sum();
    assert_eq!(creates, 302, "creates journaled: {creates}");
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");

    // The slot is dropped while nobody watches; an edit made then is not lost.
    let mut c = db.pg_client();
    c.execute(
        "SELECT pg_drop_replication_slot($1)",
        &[&format!("{}_l", db.name())],
    )
    .unwrap();
    c.batch_execute("UPDATE crm.people SET name = 'changed while stopped' WHERE id = 150")
        .unwrap();
    let w = Watcher::start(f.path(), free_port());
    w.until(
        "the edit made without a slot",
        Duration::from_secs(30),
        || {
            c.query_one("SELECT name FROM billing.people WHERE id = 150", &[])
                .unwrap()
                .get::<_, Option<String>>(0)
                .as_deref()
                == Some("changed while stopped")
        },
    );
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("did not exist"),
        "the restart says it reconciled: {log}"
    );
}

#[test]
fn two_watchers_on_one_postgres_state_store_never_run_a_link_at_once() {
    let Some(url) = pg_url() else { return };
    let store = TempDatabase::postgres(&url);
    let f = sqlite_pair("");
    let config = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        format!(
            "[state]\nurl = \"{}\"\n\n{}",
            store.url,
            config.replace("every = \"300ms\"", "every = \"100ms\"")
        ),
    )
    .unwrap();
    let a = Watcher::start(f.path(), free_port());
    let b = Watcher::start(f.path(), free_port());
    for i in 0..20 {
        f.left
            .execute(
                "UPDATE people SET name = ?1 WHERE id = 1",
                [format!("name {i}")],
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("the last edit", Duration::from_secs(30), || {
        right_name(&f, 1).as_deref() == Some("name 19")
    });
    let (code_a, log_a) = a.stop();
    let (code_b, log_b) = b.stop();
    assert_eq!((code_a, code_b), (Some(0), Some(0)), "{log_a}\n{log_b}");
    // Each watcher logs when it takes the link and lets it go: the spans never overlap.
    let spans = |log: &str| -> Vec<(String, String)> {
        let mut spans = Vec::new();
        let mut taken = None;
        for line in log.lines() {
            let at = line.split_whitespace().next().unwrap_or("").to_string();
            if line.contains("link taken") {
                taken = Some(at);
            } else if line.contains("link let go") {
                spans.push((taken.take().expect("taken before let go"), at));
            }
        }
        spans
    };
    let (mine, theirs) = (spans(&log_a), spans(&log_b));
    assert!(mine.len() + theirs.len() >= 5, "{log_a}\n{log_b}");
    for (a_from, a_to) in &mine {
        for (b_from, b_to) in &theirs {
            assert!(
                a_to <= b_from || b_to <= a_from,
                "both watchers ran the link at once: {a_from}..{a_to} and {b_from}..{b_to}"
            );
        }
    }
    let busy = log_a.matches("left alone").count() + log_b.matches("left alone").count();
    eprintln!(
        "{} + {} cycles ran the link, {busy} found it busy",
        mine.len(),
        theirs.len()
    );
}

// ---- the dashboard, in headless Chromium -------------------------------------------

/// chromedriver on a free port, ended with the test.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<Chromedriver> {
    let bin = support::servers::server_bin(
        "SYNCLINE_TEST_CHROMEDRIVER",
        "chromedriver (apt-get install chromium chromium-driver: /usr/bin/chromedriver)",
    )?;
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(Chromedriver { child, port })
}

fn screenshot(name: &str, png: &[u8]) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[test]
fn a_person_resolves_a_conflict_in_the_dashboard_and_the_next_cycle_writes_it() {
    let Some(driver) = chromedriver() else { return };
    let token = "dashboard-admin-token-123";
    let (f, w) = watching_a_conflict(token);
    let page = w.url("/");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use fantoccini::{ClientBuilder, Locator};
        let chromium = std::env::var("SYNCLINE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
            }),
        );
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("chromedriver starts a headless Chromium session");
        browser.goto(&page).await.unwrap();
        let row = browser.wait().for_element(Locator::Css("tr.conflict")).await.unwrap();
        let text = row.text().await.unwrap();
        assert!(text.contains("left says") && text.contains("right says"), "{text}");
        screenshot("dashboard-conflict.png", &browser.screenshot().await.unwrap());
        browser.find(Locator::Id("token")).await.unwrap().send_keys(token).await.unwrap();
        browser.find(Locator::Id("user")).await.unwrap().send_keys("Grace").await.unwrap();
        row.find(Locator::Css("input.typed")).await.unwrap().send_keys("agreed by hand").await.unwrap();
        row.find(Locator::Css("button.use-value")).await.unwrap().click().await.unwrap();
        let message = browser.find(Locator::Id("message")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let said = message.text().await.unwrap();
            if said.starts_with("Done") {
                break;
            }
            assert!(Instant::now() < deadline, "the dashboard said {said:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        screenshot("dashboard-resolved.png", &browser.screenshot().await.unwrap());
        browser.close().await.unwrap();
    });
    w.until(
        "the decision written to both sides",
        Duration::from_secs(30),
        || {
            let note = |c: &rusqlite::Connection| {
                c.query_row("SELECT note FROM people WHERE id = 1", [], |r| {
                    r.get::<_, String>(0)
                })
                .unwrap()
            };
            note(&f.left) == "agreed by hand" && note(&f.right) == "agreed by hand"
        },
    );
    let journal = w.get("/api/journal?link=people&key=1").unwrap();
    assert!(
        journal.contains("conflict resolved by Grace via the dashboard"),
        "{journal}"
    );
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// 50,000 people on the left, to be loaded in batches of `batch_size`: a load that takes
/// a while.
fn long_load(batch_size: usize) -> Fixture {
    let f = Fixture::new(PEOPLE, PEOPLE, "");
    f.left
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000)
             INSERT INTO people SELECT i, 'person ' || i, NULL FROM n;",
        )
        .unwrap();
    f.write_config(
        &format!("[links.people]\nleft = \"crm.people\"\nright = \"billing.people\"\nbatch_size = {batch_size}\n\n[links.people.fields]\nid = {{}}\nname = {{}}\nnote = {{}}\n"),
    );
    f
}

fn people(c: &rusqlite::Connection) -> i64 {
    c.query_row("SELECT COUNT(*) FROM people", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sigterm_stops_a_long_first_load_between_batches_and_the_next_run_finishes_it() {
    let f = long_load(100);
    let w = Watcher::start(f.path(), free_port());
    let count = people;
    w.until("the load under way", Duration::from_secs(30), || {
        count(&f.right) > 0
    });
    let (code, log) = w.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopped; every cycle committed"), "{log}");
    let loaded = count(&f.right);
    assert!(
        loaded < 50_000,
        "the load ran to its end ({loaded}) instead of stopping"
    );
    // Everything written was committed: the next run creates the rest, nothing twice.
    let report = run_json(&f);
    assert_eq!(count(&f.right), 50_000, "{report}");
    let created = report["links"][0]["to_right"]["created"].as_i64().unwrap();
    assert!(
        created <= 50_000 - loaded,
        "{created} created after {loaded} were loaded"
    );
    let again = run_json(&f);
    assert_eq!(again["links"][0]["to_right"]["created"], 0, "{again}");
    assert_eq!(again["links"][0]["to_right"]["updated"], 0, "{again}");
}

#[test]
fn a_slot_too_far_behind_is_made_again_and_the_link_read_in_full() {
    let Some(url) = pg_url() else { return };
    // More WAL than the limit: 5,000 rows in one statement.
    let (PgFeedFixture { f, db }, _) = pg_feeds_then(
        &url,
        "[watch]\nmax_feed_lag_bytes = 100000\n\n",
        "INSERT INTO crm.people SELECT i, 'x' || i, NULL FROM generate_series(10, 5009) i",
    );
    let run = || run_json(&f);
    // While nobody runs the link, `status` says what its slot holds back, and warns.
    let status = support::syncline(f.path()).arg("status").output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("left by its change feed"), "{status}");
    assert!(status.contains("left change feed: slot"), "{status}");
    assert!(status.contains("warning: slot"), "{status}");
    let behind = run();
    let link = &behind["links"][0];
    assert!(
        link["reading"].as_str().unwrap().starts_with("full"),
        "{behind}"
    );
    assert!(
        link["warnings"]
            .to_string()
            .contains("more than max_feed_lag_bytes = 100000"),
        "{behind}"
    );
    assert_eq!(link["to_right"]["created"], 5000, "{behind}");
    assert_eq!(pg_rows(&db, "billing.people").len(), 5002);
}

#[test]
fn a_transaction_larger_than_a_cycle_takes_makes_a_full_read_and_more_waits_its_turn() {
    let Some(url) = pg_url() else { return };
    // One transaction of 500 changes: more than a cycle takes by key.
    let (PgFeedFixture { f, db }, mut c) = pg_feeds_then(
        &url,
        "[watch]\nmax_feed_changes = 100\n\n",
        "INSERT INTO crm.people SELECT i, 'big' || i, NULL FROM generate_series(100, 599) i",
    );
    let run = || run_json(&f);
    let big = run();
    let link = &big["links"][0];
    assert!(
        link["reading"]
            .as_str()
            .unwrap()
            .contains("a transaction changed more than 100 records"),
        "{big}"
    );
    assert_eq!(link["to_right"]["created"], 500, "{big}");
    // Many small ones: a cycle takes 100 keys, says more wait, and the next takes the rest.
    for id in 1000..1150 {
        c.execute("INSERT INTO crm.people VALUES ($1, 'small', NULL)", &[&id])
            .unwrap();
    }
    let first = run();
    let link = &first["links"][0];
    assert!(
        link["reading"]
            .as_str()
            .unwrap()
            .contains("100 record(s) from its change feed"),
        "{first}"
    );
    assert_eq!(link["feeds"][0]["more"], true, "{first}");
    let second = run();
    assert!(
        second["links"][0]["reading"]
            .as_str()
            .unwrap()
            .contains("50 record(s) from its change feed"),
        "{second}"
    );
    assert_eq!(pg_rows(&db, "billing.people").len(), 2 + 500 + 150);
    let quiet = run();
    assert_eq!(quiet["links"][0]["to_right"]["created"], 0, "{quiet}");
    assert_eq!(quiet["links"][0]["to_right"]["updated"], 0, "{quiet}");
}

#[test]
fn a_slot_on_a_quiet_table_does_not_hold_back_a_busy_servers_wal() {
    let Some(url) = pg_url() else { return };
    let PgFeedFixture { f, db } = pg_feeds(&url, "");
    run_json(&f);
    let mut c = db.pg_client();
    // Others write a lot, none of it to the linked tables.
    c.batch_execute(
        "CREATE TABLE crm.elsewhere (id int PRIMARY KEY, body text);
         INSERT INTO crm.elsewhere SELECT i, repeat('x', 100) FROM generate_series(1, 50000) i;",
    )
    .unwrap();
    let retained = |report: &serde_json::Value| {
        report["links"][0]["feeds"][0]["retained_bytes"]
            .as_u64()
            .unwrap()
    };
    let first = run_json(&f);
    assert!(retained(&first) > 1_000_000, "{first}");
    assert!(
        first["links"][0]["reading"]
            .as_str()
            .unwrap()
            .contains("from its change feed"),
        "{first}"
    );
    // That run confirmed the feed past what it decoded: the next holds back far less.
    let second = run_json(&f);
    assert!(retained(&second) < retained(&first), "{first}\n{second}");
}

#[test]
fn a_second_sigterm_ends_watch_at_once_and_the_next_run_finishes_the_work() {
    // Large batches: the first signal waits for the one in hand, which takes a while.
    let f = long_load(50_000);
    let mut w = Watcher::start(f.path(), free_port());
    w.until("the load under way", Duration::from_secs(30), || {
        w.log_text().contains("link taken")
    });
    w.signal(libc::SIGTERM);
    // Two signals sent at once may arrive as one: the second goes once the first is in.
    w.until("the first signal taken", Duration::from_secs(10), || {
        w.log_text().contains("stopping")
    });
    w.signal(libc::SIGTERM);
    let mut child = w.child.take().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{}", w.log_text());
    assert!(people(&f.right) < 50_000, "the load was not cut short");
    // Ended mid-cycle, as a crash would: the next run creates the rest, nothing twice.
    assert_eq!(
        support::syncline(f.path())
            .arg("run")
            .output()
            .unwrap()
            .status
            .code(),
        Some(0)
    );
    assert_eq!(people(&f.right), 50_000);
    let again = run_json(&f);
    assert_eq!(again["links"][0]["to_right"]["created"], 0, "{again}");
}
