//! Benchmark: a first one-way run and a no-change run over N SQLite rows (default
//! 1,000,000; `SYNCLINE_BENCH_ROWS` to change), against baselines measured in the same
//! process on the same files:
//! - first run vs. `INSERT INTO right SELECT … FROM left` across ATTACHed databases (the
//!   fastest copy SQLite can do, with no identity, base or journal);
//! - no-change run vs. a plain scan of both tables.
//!
//! syncline runs as its binary (`syncline run --json`) under GNU `time`, so the peak
//! resident memory printed is the binary's own. The link uses the default `batch_size`. Prints times, rows/s, ratios and peak
//! memory per phase. Run with `cargo bench --bench sqlite_sync`.

mod support;

use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;
use support::{flush_written_files, run_syncline_binary, timed};

const CONFIG: &str = r#"
[systems.crm]
kind = "sqlite"
path = "left.db"

[systems.billing]
kind = "sqlite"
path = "right.db"

[links.contacts]
left = "crm.contacts"
right = "billing.contacts"
left_key = "id"
right_key = "id"
mode = "one-way"
right_ref = "crm_id"

[links.contacts.fields]
email = {}
name = {}
company = {}
status = {}
amount = {}
updated_at = {}
"#;

const SCHEMA: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, name TEXT, company TEXT, status TEXT, amount REAL, updated_at TEXT";

fn seed(dir: &Path, rows: u64) {
    let left = Connection::open(dir.join("left.db")).unwrap();
    left.execute_batch(&format!("PRAGMA journal_mode = WAL; {SCHEMA});"))
        .unwrap();
    let tx = left.unchecked_transaction().unwrap();
    {
        let mut stmt = tx
            .prepare("INSERT INTO contacts VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .unwrap();
        for i in 0..rows as i64 {
            stmt.execute(rusqlite::params![
                i + 1,
                format!("person{i}@example.com"),
                format!("Person {i}"),
                format!("Company {}", i % 5000),
                ["active", "trial", "past_due"][(i % 3) as usize],
                (i % 100_000) as f64 / 100.0,
                format!("2026-11-{:02} 10:00:00", 1 + i % 28)
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    let right = Connection::open(dir.join("right.db")).unwrap();
    right
        .execute_batch(&format!(
            "PRAGMA journal_mode = WAL; {SCHEMA}, crm_id TEXT);"
        ))
        .unwrap();
    std::fs::write(dir.join("syncline.toml"), CONFIG).unwrap();
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this file too: keep it tiny then.
    let is_bench = std::env::args().any(|a| a == "--bench");
    let rows: u64 = std::env::var("SYNCLINE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { 1_000_000 } else { 1000 });
    let dir = tempfile::tempdir().unwrap();
    println!("seeding {rows} rows…");
    seed(dir.path(), rows);

    // Baseline 1: the fastest copy SQLite can make between the two files.
    let base_dir = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join("left.db"), base_dir.path().join("left.db")).unwrap();
    let right = Connection::open(base_dir.path().join("right.db")).unwrap();
    right
        .execute_batch(&format!("{SCHEMA}, crm_id TEXT);"))
        .unwrap();
    flush_written_files();
    let (_, copy_time, copy_rss) = timed(|| {
        right
            .execute_batch(&format!(
                "ATTACH '{}' AS l; INSERT INTO contacts SELECT *, CAST(id AS TEXT) FROM l.contacts;",
                base_dir.path().join("left.db").display()
            ))
            .unwrap()
    });

    flush_written_files();
    let first = run_syncline_binary(dir.path());
    assert_eq!(
        first.count("to_right", "created"),
        rows,
        "first run must create every row"
    );
    let (first_time, first_rss, first_cpu) = (first.elapsed, first.peak_rss_mib, first.cpu_secs);

    // Baseline 2: reading both tables once, which a no-change run has to do at least.
    flush_written_files();
    let (_, scan_time, _) = timed(|| {
        for file in ["left.db", "right.db"] {
            let c = Connection::open(dir.path().join(file)).unwrap();
            let mut stmt = c.prepare("SELECT id, email, name, company, status, amount, updated_at FROM contacts ORDER BY id").unwrap();
            let mut rows = stmt.query([]).unwrap();
            let mut n = 0u64;
            while let Some(r) = rows.next().unwrap() {
                let _: Option<String> = r.get(1).unwrap();
                n += 1;
            }
            assert_eq!(n, rows_count(&c));
        }
    });
    flush_written_files();
    let again = run_syncline_binary(dir.path());
    assert_eq!(
        again.report["links"][0]["unchanged"].as_u64(),
        Some(rows),
        "no-change run must find every pair unchanged"
    );
    for counter in ["created", "updated", "deleted"] {
        assert_eq!(again.count("to_right", counter), 0);
    }
    let (again_time, again_rss, again_cpu) = (again.elapsed, again.peak_rss_mib, again.cpu_secs);

    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    let known = |m: Option<f64>| m.map_or("-".to_string(), |m| format!("{m:.1}"));
    println!(
        "\n{:<34} {:>10} {:>14} {:>10} {:>12} {:>6}",
        "phase", "seconds", "rows/s", "ratio", "peak RSS MiB", "CPU s"
    );
    println!(
        "{:<34} {:>10.2} {:>14.0} {:>10} {:>12.1}",
        "baseline: INSERT…SELECT copy",
        copy_time.as_secs_f64(),
        rate(copy_time),
        "1.00×",
        copy_rss
    );
    println!(
        "{:<34} {:>10.2} {:>14.0} {:>9.2}× {:>12} {:>6}",
        "syncline first run (one-way)",
        first_time.as_secs_f64(),
        rate(first_time),
        first_time.as_secs_f64() / copy_time.as_secs_f64(),
        known(first_rss),
        known(first_cpu)
    );
    println!(
        "{:<34} {:>10.2} {:>14.0} {:>10} {:>12}",
        "baseline: scan both tables",
        scan_time.as_secs_f64(),
        rate(scan_time),
        "1.00×",
        "-"
    );
    println!(
        "{:<34} {:>10.2} {:>14.0} {:>9.2}× {:>12} {:>6}",
        "syncline no-change run",
        again_time.as_secs_f64(),
        rate(again_time),
        again_time.as_secs_f64() / scan_time.as_secs_f64(),
        known(again_rss),
        known(again_cpu)
    );
    wide_rows(if is_bench { 900 } else { 20 });
    every_create_refused(dir.path(), rows);
}

/// A first load whose every create is refused (a CHECK constraint no `check` can see):
/// how long until the link stops, and its peak memory. Before a batch refused whole
/// stopped the link, a run like it (1M rows, PostgreSQL) sent every record, replayed
/// each alone, took 560 s and peaked at 996 MB.
fn every_create_refused(seeded: &Path, rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(seeded.join("left.db"), dir.path().join("left.db")).unwrap();
    Connection::open(dir.path().join("right.db"))
        .unwrap()
        .execute_batch(&format!("{SCHEMA}, crm_id TEXT, CHECK (email IS NULL));"))
        .unwrap();
    std::fs::write(dir.path().join("syncline.toml"), CONFIG).unwrap();
    flush_written_files();
    let run = support::run_syncline_binary_expecting(dir.path(), 1);
    let error = run.report["error"].as_str().unwrap_or_default();
    assert!(error.contains("refused all"), "{error}");
    println!(
        "{:<34} {:>10.2} {:>14} {:>10} {:>12} {:>6}",
        format!("every create refused ({rows} rows)"),
        run.elapsed.as_secs_f64(),
        "stopped",
        "",
        run.peak_rss_mib
            .map_or("-".to_string(), |m| format!("{m:.1}")),
        run.cpu_secs.map_or("-".to_string(), |c| format!("{c:.1}"))
    );
}

/// Bounded memory with wide rows: `rows` records of 1 MiB each, SQLite → SQLite, first
/// run. A batch ends at `connectors::BATCH_BYTES`, so the peak stays a few batches of
/// values (plus what the allocator keeps), whatever the row count.
fn wide_rows(rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    let left = Connection::open(dir.path().join("left.db")).unwrap();
    left.execute_batch("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT);")
        .unwrap();
    let body = "x".repeat(1 << 20);
    for i in 0..rows {
        left.execute(
            "INSERT INTO docs (body) VALUES (?1 || ?2)",
            rusqlite::params![body, i.to_string()],
        )
        .unwrap();
    }
    Connection::open(dir.path().join("right.db"))
        .unwrap()
        .execute_batch("CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT);")
        .unwrap();
    std::fs::write(
        dir.path().join("syncline.toml"),
        "[systems.a]\nkind = \"sqlite\"\npath = \"left.db\"\n[systems.b]\nkind = \"sqlite\"\npath = \"right.db\"\n[links.docs]\nleft = \"a.docs\"\nright = \"b.docs\"\nmode = \"one-way\"\n[links.docs.fields]\nbody = {}\n",
    )
    .unwrap();
    flush_written_files();
    let run = run_syncline_binary(dir.path());
    assert_eq!(run.count("to_right", "created"), rows);
    println!(
        "{:<34} {:>10.2} {:>14} {:>10} {:>12} {:>6}",
        format!("wide rows: {rows} × 1 MiB, first run"),
        run.elapsed.as_secs_f64(),
        "",
        "",
        run.peak_rss_mib
            .map_or("-".to_string(), |m| format!("{m:.1}")),
        run.cpu_secs.map_or("-".to_string(), |c| format!("{c:.1}"))
    );
}

fn rows_count(c: &Connection) -> u64 {
    c.query_row("SELECT count(*) FROM contacts", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64
}
