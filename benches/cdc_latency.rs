//! Benchmark: end-to-end latency of `syncline watch` with a PostgreSQL change feed — a
//! commit on the left to the value being visible on the right — under a steady stream of
//! updates, against PostgreSQL's own logical replication (a subscription) measured the
//! same way in the same run; and the watcher's CPU and memory idle and under that load.
//!
//! Needs `SYNCLINE_TEST_PG_URL` (a server with `wal_level = logical`).
//! `SYNCLINE_BENCH_RATE` changes per second (default 1,000), `SYNCLINE_BENCH_SECONDS`
//! (default 60), `SYNCLINE_BENCH_ROWS` rows updated in turn (default 10,000).
//! `cargo bench --bench cdc_latency`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pg(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// Waits (two minutes at most) until `table` holds `rows` rows.
fn wait_for_rows(url: &str, table: &str, rows: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut c = pg(url);
    let count = format!("SELECT count(*) FROM {table}");
    while c.query_one(&count, &[]).unwrap().get::<_, i64>(0) < rows as i64 {
        assert!(Instant::now() < deadline, "{what} never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU seconds (user + system) and resident memory (MB) of a process.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kb / 1024.0)
}

struct Latencies {
    p50_ms: f64,
    p99_ms: f64,
    changes: usize,
}

/// Updates `rows` rows of `left.people` in turn at `rate` per second for `seconds`,
/// setting `v` to a growing sequence from `base` (past every value an earlier stream
/// left), and watches `max(v)` of the right table: a
/// change's latency is from its commit to the first look that sees it (looks every 2 ms).
fn stream(
    left_url: &str,
    right_url: &str,
    right_table: &str,
    (rate, seconds, rows): (u64, u64, u64),
    base: i64,
) -> Latencies {
    let total = (rate * seconds) as usize;
    let committed: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, committed) = (left_url.to_string(), committed.clone());
        std::thread::spawn(move || {
            let mut c = pg(&url);
            let update = c
                .prepare("UPDATE crm.people SET v = $1 WHERE id = $2")
                .unwrap();
            for seq in 0..total {
                let due = Duration::from_secs_f64(seq as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let id = (seq as u64 % rows) as i32 + 1;
                c.execute(&update, &[&(base + seq as i64 + 1), &id])
                    .unwrap();
                committed[seq].store(start.elapsed().as_micros() as i64, Ordering::SeqCst);
            }
        })
    };
    let mut seen_at = vec![0i64; total];
    let mut seen = 0usize;
    let mut c = pg(right_url);
    let max = c
        .prepare(&format!("SELECT COALESCE(max(v), 0) FROM {right_table}"))
        .unwrap();
    let deadline = start + Duration::from_secs(seconds + 60);
    while seen < total && Instant::now() < deadline {
        let v: i64 = c.query_one(&max, &[]).unwrap().get::<_, i64>(0) - base;
        let now = start.elapsed().as_micros() as i64;
        while seen < total && (seen as i64) < v {
            seen_at[seen] = now;
            seen += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    done.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(
        seen, total,
        "not every change arrived within a minute of the stream's end"
    );
    let mut ms: Vec<f64> = (0..total)
        .map(|i| (seen_at[i] - committed[i].load(Ordering::SeqCst)).max(0) as f64 / 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    Latencies {
        p50_ms: ms[total / 2],
        p99_ms: ms[total * 99 / 100],
        changes: total,
    }
}

/// Drops what the benchmark made (its two databases, their slots, the subscription and
/// syncline's replication origins), also when it fails half-way.
struct Cleanup {
    url: String,
    db: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let sub_db = format!("{}_sub", self.db);
        let native = format!("{}_native", self.db);
        if let Ok(mut c) = postgres::Client::connect(&with_db(&self.url, &sub_db), postgres::NoTls)
        {
            let _ = c.batch_execute(&format!(
                "ALTER SUBSCRIPTION {native} DISABLE; ALTER SUBSCRIPTION {native} SET (slot_name = NONE); DROP SUBSCRIPTION {native}"
            ));
        }
        let Ok(mut admin) = postgres::Client::connect(&self.url, postgres::NoTls) else {
            return;
        };
        let _ = admin.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1",
            &[&self.db],
        );
        for d in [&self.db, &sub_db] {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"));
        }
        let _ = admin.execute(
            "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE $1",
            &[&format!("{}%", self.db)],
        );
    }
}

fn main() {
    let Ok(url) = std::env::var("SYNCLINE_TEST_PG_URL") else {
        eprintln!(
            "skipped: set SYNCLINE_TEST_PG_URL=postgres://root@127.0.0.1:5432/test (wal_level = logical)"
        );
        return;
    };
    // Under `cargo test` (no `--bench`), a few seconds of it, as a check that it runs.
    let is_bench = std::env::args().any(|a| a == "--bench");
    let rate = env_num("SYNCLINE_BENCH_RATE", if is_bench { 1000 } else { 100 });
    let seconds = env_num("SYNCLINE_BENCH_SECONDS", if is_bench { 60 } else { 3 });
    let rows = env_num("SYNCLINE_BENCH_ROWS", if is_bench { 10_000 } else { 500 });
    let db = format!("syncline_cdc_bench_{}", std::process::id());
    let sub_db = format!("{db}_sub");
    let _cleanup = Cleanup {
        url: url.clone(),
        db: db.clone(),
    };
    let mut admin = pg(&url);
    for d in [&db, &sub_db] {
        admin
            .batch_execute(&format!("CREATE DATABASE {d}"))
            .unwrap();
    }
    let db_url = with_db(&url, &db);
    let sub_url = with_db(&url, &sub_db);
    let table = "(id int PRIMARY KEY, name text, v bigint)";
    pg(&db_url)
        .batch_execute(&format!(
            "CREATE SCHEMA crm; CREATE SCHEMA billing;
             CREATE TABLE crm.people {table}; CREATE TABLE billing.people {table};
             CREATE INDEX ON billing.people (v);
             INSERT INTO crm.people SELECT i, 'person ' || i, 0 FROM generate_series(1, {rows}) i;"
        ))
        .unwrap();
    pg(&sub_url)
        .batch_execute(&format!(
            "CREATE SCHEMA crm; CREATE TABLE crm.people {table}; CREATE INDEX ON crm.people (v);"
        ))
        .unwrap();

    // The baseline: PostgreSQL's own logical replication into another database. A
    // subscription to the same server needs its slot made beforehand.
    let slot = format!("{db}_native");
    {
        let mut c = pg(&db_url);
        // Two statements: a slot cannot be made in a transaction that wrote.
        c.batch_execute(&format!("CREATE PUBLICATION {slot} FOR TABLE crm.people"))
            .unwrap();
        c.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .unwrap();
        let conninfo = format!("host=127.0.0.1 port=5432 user=root dbname={db}");
        pg(&sub_url)
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {slot} CONNECTION '{conninfo}' PUBLICATION {slot} WITH (create_slot = false, slot_name = '{slot}', copy_data = true)"
            ))
            .unwrap();
        wait_for_rows(
            &sub_url,
            "crm.people",
            rows,
            "the subscription's copy of the table",
        );
    }
    println!("cdc_latency: {rate} updates/s for {seconds} s over {rows} rows");
    let native = stream(&db_url, &sub_url, "crm.people", (rate, seconds, rows), 0);
    println!(
        "  PostgreSQL logical replication (baseline): p50 {:.1} ms, p99 {:.1} ms ({} changes)",
        native.p50_ms, native.p99_ms, native.changes
    );
    pg(&sub_url)
        .batch_execute(&format!(
            "ALTER SUBSCRIPTION {slot} DISABLE; ALTER SUBSCRIPTION {slot} SET (slot_name = NONE); DROP SUBSCRIPTION {slot}"
        ))
        .unwrap();
    pg(&db_url)
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .unwrap();

    // syncline watch, one-way with a feed on the left.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("syncline.toml"),
        format!(
            "[state]\npath = \"state.db\"\n\n[systems.pg]\nkind = \"postgres\"\nurl = \"{db_url}\"\n\n[links.people]\nleft = \"pg.crm.people\"\nright = \"pg.billing.people\"\nmode = \"one-way\"\nevery = \"1h\"\ndebounce = \"5ms\"\n\n[links.people.fields]\nid = {{}}\nname = {{}}\nv = {{}}\n\n[links.people.changes]\nleft = {{ feed = \"logical\", slot = \"{db}_l\" }}\n"
        ),
    )
    .unwrap();
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_syncline"))
        .current_dir(dir.path())
        .args(["watch"])
        .env("SYNCLINE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_rows(&db_url, "billing.people", rows, "syncline's first load");
    let idle = Duration::from_secs(if is_bench { 10 } else { 1 });
    std::thread::sleep(Duration::from_secs(2));
    let (cpu0, _) = usage(watcher.id());
    std::thread::sleep(idle);
    let (cpu1, idle_rss) = usage(watcher.id());
    let ours = stream(
        &db_url,
        &db_url,
        "billing.people",
        (rate, seconds, rows),
        (rate * seconds) as i64,
    );
    let (cpu2, load_rss) = usage(watcher.id());
    let _ = Command::new("kill").arg(watcher.id().to_string()).status();
    let _ = watcher.wait();
    println!(
        "  syncline watch: p50 {:.1} ms ({:.1}x), p99 {:.1} ms ({:.1}x)",
        ours.p50_ms,
        ours.p50_ms / native.p50_ms.max(0.001),
        ours.p99_ms,
        ours.p99_ms / native.p99_ms.max(0.001)
    );
    println!(
        "  watcher: idle {:.1}% of a core, {idle_rss:.0} MB; under load {:.1}% of a core, {load_rss:.0} MB",
        (cpu1 - cpu0) / idle.as_secs_f64() * 100.0,
        (cpu2 - cpu1) / seconds as f64 * 100.0
    );
}
