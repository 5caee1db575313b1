//! Benchmark: syncline against PostgreSQL and MariaDB, with baselines measured in the
//! same run on the same data:
//! - PG→PG first load vs. a binary `COPY … TO STDOUT | COPY … FROM STDIN` pipe, in-process
//!   and as `psql … | psql …` in the shell;
//! - PG→SQLite first load vs. `COPY … TO STDOUT (FORMAT csv)` + `sqlite3 .import`;
//! - PG→MariaDB first load;
//! - a steady-state two-way PG↔PG cycle with 1% of the rows changed on each side;
//! - cycles that read by cursor (`[changes]`) on a one-way PG→PG link, with nothing and
//!   with 1% changed, against a full-read cycle and sling's incremental mode (its binary
//!   from the PyPI wheel `sling-linux-amd64`, found as `sling` on PATH or `SLING_BIN`);
//! - digest reconciliations of the same link (nothing changed; 100 rows changed in one
//!   key range) against one `COPY` out of one side.
//!
//! Needs `SYNCLINE_TEST_PG_URL` (and `SYNCLINE_TEST_MYSQL_URL` for MariaDB); rows from
//! `SYNCLINE_BENCH_ROWS` (default 1,000,000). `cargo bench --bench pg_sync`.
//! `SYNCLINE_BENCH_PHASES` picks phases (comma-separated: `pg`, `sqlite`, `mariadb`,
//! `two-way`, `cursor`, `digests`; default all), e.g. to profile one of them. `SYNCLINE_BENCH_ROUNDS` (default
//! 3) sets how often each first load is measured with its baselines, in turn; every
//! timed phase starts on a quiet machine (see `settle`).
//!
//! syncline runs as its binary (`syncline run --json`) under GNU `time`: the peak memory
//! and CPU seconds printed are the binary's own, none of the benchmark's. Links use the
//! default `batch_size`, as a user's would (10,000 per batch measured 4% faster for
//! PG→SQLite and peaked at 111 MB, over the 100 MB target).

use std::path::Path;
mod support;

use support::{BinaryRun, flush_written_files, run_syncline_binary, timed};

const TABLE: &str = "(id bigint PRIMARY KEY, email text, name text, company text, status text, amount numeric(12,2), updated_at timestamptz)";

fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

fn pg(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Runs one cycle of `config` with the `syncline` binary, measured.
fn run(dir: &Path, config: &str) -> BinaryRun {
    std::fs::write(dir.join("syncline.toml"), config).unwrap();
    run_syncline_binary(dir)
}

/// Each first load starts from an empty state store, as a first load does.
fn fresh_state(dir: &Path) {
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

/// A timed one-way first load from `src.contacts` into `right` (an empty collection),
/// as a report line against `baseline` seconds. `options` are more of the link's keys.
#[allow(clippy::too_many_arguments)]
fn first_load(
    dir: &Path,
    systems: &str,
    right: &str,
    options: &str,
    rows: u64,
    phase: &'static str,
    baseline: f64,
) -> Line {
    fresh_state(dir);
    let config = format!(
        "{systems}[links.c]\nleft = \"src.contacts\"\nright = \"{right}\"\n{options}{}",
        fields()
    );
    let r = run(dir, &config);
    assert_eq!(r.count("to_right", "created"), rows);
    Line {
        phase,
        secs: r.elapsed.as_secs_f64(),
        rows,
        baseline: Some(baseline),
        rss: r.peak_rss_mib,
        cpu: r.cpu_secs,
        ratio_range: None,
    }
}

/// Times `psql "$SRC" -c "COPY … TO STDOUT (FORMAT binary)" | psql "$DST" -c "COPY … FROM
/// STDIN (FORMAT binary)"` into a scratch table of the target database. `None` (with a
/// note) where `psql` is not installed.
fn shell_copy_pipe(src_url: &str, dst_url: &str, dst: &mut postgres::Client) -> Option<f64> {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("psql not found: the shell-pipe baseline is left out");
        return None;
    }
    dst.batch_execute(&format!("CREATE TABLE psql_baseline {TABLE}"))
        .unwrap();
    let (status, elapsed, _) = timed(|| {
        std::process::Command::new("bash")
            .args([
                "-c",
                "set -o pipefail; psql -X -q -v ON_ERROR_STOP=1 \"$1\" -c 'COPY contacts TO STDOUT (FORMAT binary)' | psql -X -q -v ON_ERROR_STOP=1 \"$2\" -c 'COPY psql_baseline FROM STDIN (FORMAT binary)'",
                "pipe",
                src_url,
                dst_url,
            ])
            .status()
            .unwrap()
    });
    assert!(status.success(), "the psql pipe failed: {status}");
    dst.batch_execute("DROP TABLE psql_baseline").unwrap();
    Some(elapsed.as_secs_f64())
}

/// Each timed phase starts on a quiet machine: what the phases before wrote is vacuumed
/// and checkpointed, and the files they wrote flushed (`sync`), so no phase pays for
/// another's autovacuum, checkpoint or page-cache writeback.
fn settle(admin: &mut postgres::Client, databases: [&mut postgres::Client; 2]) {
    for c in databases {
        c.batch_execute("VACUUM ANALYZE").unwrap();
    }
    if let Err(e) = admin.batch_execute("CHECKPOINT") {
        println!("CHECKPOINT not allowed ({e}): phases may pay for each other's writes");
    }
    flush_written_files();
}

/// Reconciliations by digests of a one-way PG→PG link: with nothing changed, and with
/// 100 rows changed in one key range, against one binary `COPY` out of one side.
fn digest_cycles(
    dir: &Path,
    systems: &str,
    src: &mut postgres::Client,
    dst: &mut postgres::Client,
    admin: &mut postgres::Client,
    rows: u64,
    lines: &mut Vec<Line>,
) {
    dst.batch_execute(&format!("CREATE TABLE digest_dst {TABLE}"))
        .unwrap();
    let config = format!(
        "{systems}[links.c]\nleft = \"src.contacts\"\nright = \"dst.digest_dst\"\n{}[links.c.changes]\nreconcile = \"digests\"\n",
        fields()
    );
    fresh_state(dir);
    assert_eq!(run(dir, &config).count("to_right", "created"), rows);
    // A full read learns the ranges, a reconciliation reading every range their digests.
    run(dir, &config);
    run(dir, &config);
    settle(admin, [src, dst]);
    let (_, copy, _) = timed(|| {
        let mut reader = src
            .copy_out("COPY (SELECT * FROM contacts) TO STDOUT (FORMAT binary)")
            .unwrap();
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    });
    let copy = copy.as_secs_f64();
    settle(admin, [src, dst]);
    let idle = run(dir, &config);
    assert_eq!(idle.count("to_right", "updated"), 0);
    let from = rows / 2;
    src.batch_execute(&format!(
        "UPDATE contacts SET status = status || '.' WHERE id > {from} AND id <= {}",
        from + 100
    ))
    .unwrap();
    settle(admin, [src, dst]);
    let busy = run(dir, &config);
    assert_eq!(busy.count("to_right", "updated"), 100.min(rows));
    let line = |phase, r: &BinaryRun, baseline| Line {
        phase,
        secs: r.elapsed.as_secs_f64(),
        rows,
        baseline: Some(baseline),
        rss: r.peak_rss_mib,
        cpu: r.cpu_secs,
        ratio_range: None,
    };
    lines.push(Line::baseline("baseline: COPY out one side", copy, rows));
    lines.push(line("digest reconciliation, no change", &idle, copy));
    lines.push(line(
        "digests, 100 rows in one range",
        &busy,
        idle.elapsed.as_secs_f64(),
    ));
}

/// Cycles of a one-way PG→PG link that reads the source by a change stamp, as sling's
/// incremental mode does: with nothing changed and with 1% changed, against a full-read
/// cycle of the same link and against sling on the same changes.
#[allow(clippy::too_many_arguments)]
fn cursor_cycles(
    dir: &Path,
    systems: &str,
    src_url: &str,
    dst_url: &str,
    src: &mut postgres::Client,
    dst: &mut postgres::Client,
    admin: &mut postgres::Client,
    rows: u64,
    lines: &mut Vec<Line>,
) {
    // Rows stamped over the past (a second apart, as a table edited over time), then
    // every insert and edit stamped when it happens.
    src.batch_execute(
        "ALTER TABLE contacts ADD COLUMN changed_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00';
         UPDATE contacts SET changed_at = changed_at + id * interval '1 second';
         ALTER TABLE contacts ALTER COLUMN changed_at SET DEFAULT clock_timestamp();
         CREATE INDEX contacts_changed_at ON contacts (changed_at);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.changed_at = clock_timestamp(); RETURN NEW; END $$;
         CREATE TRIGGER touch BEFORE UPDATE ON contacts FOR EACH ROW EXECUTE FUNCTION touch();",
    )
    .unwrap();
    dst.batch_execute(&format!("CREATE TABLE cursor_dst {TABLE}"))
        .unwrap();
    let link = format!(
        "{systems}[links.c]\nleft = \"src.contacts\"\nright = \"dst.cursor_dst\"\n{}",
        fields()
    );
    let by_cursor = format!(
        "{link}[links.c.changes]\nleft = {{ cursor = \"changed_at\", lookback = \"5s\" }}\nfull_every = 1000\n"
    );
    fresh_state(dir);
    assert_eq!(run(dir, &by_cursor).count("to_right", "created"), rows);
    run(dir, &by_cursor); // a full read, which sets the cursor
    let changed = rows / 100;
    let touch = |src: &mut postgres::Client| {
        src.batch_execute(&format!(
            "UPDATE contacts SET status = status || '.' WHERE id % 100 = 7 AND id <= {}",
            changed * 100
        ))
        .unwrap();
    };
    settle(admin, [src, dst]);
    let full_idle = run(dir, &link);
    assert_eq!(full_idle.count("to_right", "updated"), 0);
    settle(admin, [src, dst]);
    let idle = run(dir, &by_cursor);
    assert_eq!(idle.count("to_right", "updated"), 0);
    touch(src);
    settle(admin, [src, dst]);
    let busy = run(dir, &by_cursor);
    assert_eq!(busy.count("to_right", "updated"), changed);

    let sling = std::env::var("SLING_BIN").unwrap_or_else(|_| "sling".into());
    let sling_run = || -> Option<f64> {
        let (status, elapsed, _) = timed(|| {
            std::process::Command::new(&sling)
                .args([
                    "run",
                    "--src-conn",
                    src_url,
                    "--src-stream",
                    "public.contacts",
                    "--tgt-conn",
                    dst_url,
                    "--tgt-object",
                    "public.sling_dst",
                    "--mode",
                    "incremental",
                    "--primary-key",
                    "id",
                    "--update-key",
                    "changed_at",
                ])
                .env("SLING_THREADS", "1")
                .output()
        });
        match status {
            Ok(out) if out.status.success() => Some(elapsed.as_secs_f64()),
            Ok(out) => {
                println!("sling failed: {}", String::from_utf8_lossy(&out.stderr));
                None
            }
            Err(e) => {
                println!(
                    "sling not found ({e}): install the PyPI wheel sling-linux-amd64 or set SLING_BIN; its column is left out"
                );
                None
            }
        }
    };
    let peers = sling_run().and_then(|_| {
        settle(admin, [src, dst]);
        let idle = sling_run()?;
        touch(src);
        settle(admin, [src, dst]);
        Some((idle, sling_run()?))
    });
    let line = |phase, r: &BinaryRun, baseline| Line {
        phase,
        secs: r.elapsed.as_secs_f64(),
        rows,
        baseline: Some(baseline),
        rss: r.peak_rss_mib,
        cpu: r.cpu_secs,
        ratio_range: None,
    };
    let full = full_idle.elapsed.as_secs_f64();
    lines.push(line(
        "syncline full-read cycle, no change",
        &full_idle,
        full,
    ));
    lines.push(line("cursor cycle, no change (vs full)", &idle, full));
    lines.push(line("cursor cycle, 1% changed (vs full)", &busy, full));
    if let Some((sling_idle, sling_busy)) = peers {
        lines.push(Line::baseline(
            "peer: sling incremental, no change",
            sling_idle,
            rows,
        ));
        lines.push(line(
            "cursor cycle, no change (vs sling)",
            &idle,
            sling_idle,
        ));
        lines.push(Line::baseline(
            "peer: sling incremental, 1% changed",
            sling_busy,
            rows,
        ));
        lines.push(line(
            "cursor cycle, 1% changed (vs sling)",
            &busy,
            sling_busy,
        ));
    }
}

fn fields() -> &'static str {
    "[links.c.fields]\nid = {}\nemail = {}\nname = {}\ncompany = {}\nstatus = {}\namount = {}\nupdated_at = {}\n"
}

#[derive(Clone)]
struct Line {
    phase: &'static str,
    secs: f64,
    rows: u64,
    baseline: Option<f64>,
    rss: Option<f64>,
    /// CPU seconds syncline's process used (all its threads).
    cpu: Option<f64>,
    /// The lowest and highest ratio over the rounds this line is the median of.
    ratio_range: Option<(f64, f64)>,
}

impl Line {
    fn baseline(phase: &'static str, secs: f64, rows: u64) -> Line {
        Line {
            phase,
            secs,
            rows,
            baseline: None,
            rss: None,
            cpu: None,
            ratio_range: None,
        }
    }

    fn ratio(&self) -> f64 {
        self.baseline.map_or(1.0, |b| self.secs / b)
    }

    /// The round whose ratio is the median (the upper one of an even count), with the
    /// range of all rounds' ratios.
    fn median_round(mut rounds: Vec<Line>) -> Line {
        rounds.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        let range = (rounds[0].ratio(), rounds[rounds.len() - 1].ratio());
        let mut line = rounds.swap_remove(rounds.len() / 2);
        if range.0 < range.1 {
            line.ratio_range = Some(range);
        }
        line
    }
}

/// The median (the upper one of an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn main() {
    let is_bench = std::env::args().any(|a| a == "--bench");
    let Ok(admin) = std::env::var("SYNCLINE_TEST_PG_URL") else {
        println!(
            "skipped: set SYNCLINE_TEST_PG_URL (and SYNCLINE_TEST_MYSQL_URL) to run the PostgreSQL benchmark"
        );
        return;
    };
    let rows: u64 = std::env::var("SYNCLINE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { 1_000_000 } else { 2000 });
    let rounds: usize = std::env::var("SYNCLINE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { 3 } else { 1 })
        .max(1);
    let phases = std::env::var("SYNCLINE_BENCH_PHASES").unwrap_or_default();
    let wants = |phase: &str| phases.is_empty() || phases.split(',').any(|p| p.trim() == phase);
    let tag = format!("syncline_bench_{}", std::process::id());
    let (src_db, dst_db) = (format!("{tag}_src"), format!("{tag}_dst"));
    let mut admin_client = pg(&admin);
    for db in [&src_db, &dst_db] {
        admin_client
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .unwrap();
    }
    let (src_url, dst_url) = (with_db(&admin, &src_db), with_db(&admin, &dst_db));
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();

    println!("seeding {rows} rows…");
    let mut src = pg(&src_url);
    src.batch_execute(&format!(
        "CREATE TABLE contacts {TABLE};
         INSERT INTO contacts SELECT g, 'person' || g || '@example.com', 'Person ' || g, 'Company ' || (g % 5000),
           (ARRAY['active','trial','past_due'])[1 + g % 3], (g % 100000) / 100.0, '2026-11-01 10:00:00+00'::timestamptz + (g % 86400) * interval '1 second'
         FROM generate_series(1, {rows}) g;"
    ))
    .unwrap();
    src.batch_execute("VACUUM ANALYZE contacts").unwrap();
    let mut dst = pg(&dst_url);
    dst.batch_execute(&format!(
        "CREATE TABLE copy_baseline {TABLE}; CREATE TABLE contacts {TABLE};"
    ))
    .unwrap();

    // Without TLS, as the baselines' connections: over loopback, TLS (`sslmode=prefer`,
    // the default) cost syncline ~12% more CPU here, and the comparison is of the work.
    let systems = format!(
        "[state]\npath = \"state.db\"\n[systems.src]\nkind = \"postgres\"\nurl = \"{src_url}?sslmode=disable\"\n[systems.dst]\nkind = \"postgres\"\nurl = \"{dst_url}?sslmode=disable\"\n[systems.lite]\nkind = \"sqlite\"\npath = \"lite.db\"\n"
    );

    // The machine's speed drifts by ±15% within minutes, so a first load and its
    // baselines are measured `rounds` times in turn, each round's ratio to the baselines
    // measured next to it; the round with the median ratio is reported, with the range.
    let mut pipes = Vec::new();
    let mut shell_pipes = Vec::new();
    let mut pg_loads = Vec::new();
    for _ in 0..if wants("pg") { rounds } else { 1 } {
        dst.batch_execute("TRUNCATE copy_baseline, contacts")
            .unwrap();
        // Baseline: binary COPY pipe between the two databases.
        settle(&mut admin_client, [&mut src, &mut dst]);
        let (_, pipe, _) = timed(|| {
            let mut reader = src
                .copy_out("COPY contacts TO STDOUT (FORMAT binary)")
                .unwrap();
            let mut writer = dst
                .copy_in("COPY copy_baseline FROM STDIN (FORMAT binary)")
                .unwrap();
            std::io::copy(&mut reader, &mut writer).unwrap();
            writer.finish().unwrap();
        });
        pipes.push(pipe.as_secs_f64());
        // The same pipe as the shell writes it, `psql … | psql …`: two client processes
        // and a kernel pipe between them (the wording). Into a table of its own,
        // dropped after, so the later phases see the same databases either way.
        settle(&mut admin_client, [&mut src, &mut dst]);
        shell_pipes.extend(shell_copy_pipe(&src_url, &dst_url, &mut dst));
        if wants("pg") {
            settle(&mut admin_client, [&mut src, &mut dst]);
            pg_loads.push(first_load(
                dir.path(),
                &systems,
                "dst.contacts",
                "",
                rows,
                "syncline first load PG→PG",
                pipe.as_secs_f64(),
            ));
        }
    }
    let copy_pipe = median(&pipes);
    lines.push(Line::baseline(
        "baseline: binary COPY pipe PG→PG",
        copy_pipe,
        rows,
    ));
    if !shell_pipes.is_empty() {
        lines.push(Line::baseline(
            "baseline: psql COPY binary | psql (shell)",
            median(&shell_pipes),
            rows,
        ));
    }
    if !pg_loads.is_empty() {
        let load = Line::median_round(pg_loads.clone());
        lines.push(load);
        if shell_pipes.len() == pg_loads.len() {
            let against_shell = pg_loads
                .into_iter()
                .zip(&shell_pipes)
                .map(|(load, &shell)| Line {
                    phase: "  the same load vs the shell pipe",
                    baseline: Some(shell),
                    ..load
                })
                .collect();
            lines.push(Line::median_round(against_shell));
        }
    }

    if wants("sqlite") {
        let csv = dir.path().join("contacts.csv");
        let baseline_db = dir.path().join("baseline.db");
        let fresh_lite = || {
            let lite = dir.path().join("lite.db");
            let _ = std::fs::remove_file(&lite);
            rusqlite::Connection::open(&lite)
                .unwrap()
                .execute_batch("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, name TEXT, company TEXT, status TEXT, amount TEXT, updated_at TEXT);")
                .unwrap();
        };
        let mut imports = Vec::new();
        let mut lite_loads = Vec::new();
        for _ in 0..rounds {
            // Baseline: COPY to CSV, then sqlite3 .import.
            let _ = std::fs::remove_file(&baseline_db);
            settle(&mut admin_client, [&mut src, &mut dst]);
            let (_, csv_import, _) = timed(|| {
                let mut out = std::io::BufWriter::with_capacity(
                    1 << 20,
                    std::fs::File::create(&csv).unwrap(),
                );
                let mut reader = src
                    .copy_out("COPY contacts TO STDOUT (FORMAT csv)")
                    .unwrap();
                std::io::copy(&mut reader, &mut out).unwrap();
                drop(out);
                let status = std::process::Command::new("sqlite3")
                    .arg(&baseline_db)
                    .arg("CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, name TEXT, company TEXT, status TEXT, amount TEXT, updated_at TEXT);")
                    .arg(format!(".import --csv {} contacts", csv.display()))
                    .status()
                    .expect("sqlite3 is installed");
                assert!(status.success());
            });
            std::fs::remove_file(&csv).unwrap();
            imports.push(csv_import.as_secs_f64());
            fresh_lite();
            settle(&mut admin_client, [&mut src, &mut dst]);
            lite_loads.push(first_load(
                dir.path(),
                &systems,
                "lite.contacts",
                "",
                rows,
                "syncline first load PG→SQLite",
                csv_import.as_secs_f64(),
            ));
        }
        let csv_import = median(&imports);
        lines.push(Line::baseline(
            "baseline: COPY csv + sqlite3 .import",
            csv_import,
            rows,
        ));
        lines.push(Line::median_round(lite_loads));
        // With 1,000 rows per batch (the default before), once, against the median
        // baseline: a SQLite database commits each batch with four fsyncs (journal twice,
        // database, directory), the state store with one; the difference is that cost.
        fresh_lite();
        settle(&mut admin_client, [&mut src, &mut dst]);
        lines.push(first_load(
            dir.path(),
            &systems,
            "lite.contacts",
            "batch_size = 1000\n",
            rows,
            "  … with batch_size = 1000",
            csv_import,
        ));
    }

    if let Ok(my_admin) = std::env::var("SYNCLINE_TEST_MYSQL_URL")
        && wants("mariadb")
    {
        use mysql::prelude::Queryable;
        let mut my = mysql::Conn::new(mysql::Opts::from_url(&my_admin).unwrap()).unwrap();
        my.query_drop(format!("CREATE DATABASE {tag}")).unwrap();
        let my_url = with_db(&my_admin, &tag);
        let mut myc = mysql::Conn::new(mysql::Opts::from_url(&my_url).unwrap()).unwrap();
        settle(&mut admin_client, [&mut src, &mut dst]);
        myc.query_drop("CREATE TABLE contacts (id bigint PRIMARY KEY, email text, name text, company text, status text, amount decimal(12,2), updated_at datetime(6))").unwrap();
        lines.push(first_load(
            dir.path(),
            &format!("{systems}[systems.maria]\nkind = \"mysql\"\nurl = \"{my_url}\"\n"),
            "maria.contacts",
            "",
            rows,
            "syncline first load PG→MariaDB",
            copy_pipe,
        ));
        my.query_drop(format!("DROP DATABASE {tag}")).unwrap();
    }

    if wants("two-way") {
        // Steady state: a two-way PG↔PG link over the loaded tables, 1% changed per side.
        let two_way = format!(
            "{systems}[links.c]\nleft = \"src.contacts\"\nright = \"dst.copy_baseline\"\nmode = \"two-way\"\nmatch_on = [\"id\"]\nconflict = \"left-wins\"\non_delete = {{ left = \"propagate\", right = \"propagate\" }}\n[links.c.fields]\nid = {{ owner = \"left\" }}\nemail = {{ owner = \"both\" }}\nname = {{ owner = \"both\" }}\ncompany = {{ owner = \"both\" }}\nstatus = {{ owner = \"both\" }}\namount = {{ owner = \"both\" }}\nupdated_at = {{ owner = \"both\" }}\n"
        );
        // The first run links the two loaded tables (match_on id, nothing to write); the
        // second is the steady state.
        fresh_state(dir.path());
        settle(&mut admin_client, [&mut src, &mut dst]);
        let linked = run(dir.path(), &two_way);
        assert_eq!(
            linked.count("to_right", "created") + linked.count("to_left", "created"),
            0
        );
        src.batch_execute("UPDATE contacts SET name = name || ' (L)' WHERE id % 100 = 0")
            .unwrap();
        dst.batch_execute("UPDATE copy_baseline SET status = 'cancelled' WHERE id % 100 = 50")
            .unwrap();
        let cycle = run(dir.path(), &two_way);
        let changed = rows / 100 * 2;
        assert_eq!(
            cycle.count("to_right", "updated") + cycle.count("to_left", "updated"),
            changed
        );
        let (_, scan, _) = timed(|| {
            for c in [&mut src, &mut dst] {
                let mut reader = c
                    .copy_out("COPY (SELECT * FROM contacts) TO STDOUT (FORMAT binary)")
                    .unwrap();
                std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
            }
        });
        lines.push(Line::baseline(
            "baseline: COPY out both tables",
            scan.as_secs_f64(),
            rows,
        ));
        lines.push(Line {
            phase: "syncline linking two loaded tables",
            secs: linked.elapsed.as_secs_f64(),
            rows,
            baseline: Some(scan.as_secs_f64()),
            rss: linked.peak_rss_mib,
            cpu: linked.cpu_secs,
            ratio_range: None,
        });
        lines.push(Line {
            phase: "syncline two-way cycle, 1%+1% changed",
            secs: cycle.elapsed.as_secs_f64(),
            rows,
            baseline: Some(scan.as_secs_f64()),
            rss: cycle.peak_rss_mib,
            cpu: cycle.cpu_secs,
            ratio_range: None,
        });
    }

    if wants("digests") {
        digest_cycles(
            dir.path(),
            &systems,
            &mut src,
            &mut dst,
            &mut admin_client,
            rows,
            &mut lines,
        );
    }
    if wants("cursor") {
        cursor_cycles(
            dir.path(),
            &systems,
            &src_url,
            &dst_url,
            &mut src,
            &mut dst,
            &mut admin_client,
            rows,
            &mut lines,
        );
    }

    println!(
        "\n{rounds} round(s) of each first load with its baselines; the median round shown, with the range of its ratio"
    );
    println!(
        "{:<40} {:>9} {:>12} {:>9} {:>13} {:>13} {:>7}",
        "phase", "seconds", "rows/s", "ratio", "ratio range", "peak RSS MiB", "CPU s"
    );
    for l in &lines {
        println!(
            "{:<40} {:>9.2} {:>12.0} {:>9} {:>13} {:>13} {:>7}",
            l.phase,
            l.secs,
            l.rows as f64 / l.secs,
            format!("{:.2}×", l.ratio()),
            l.ratio_range
                .map_or(String::new(), |(lo, hi)| format!("{lo:.2}–{hi:.2}×")),
            l.rss.map_or("-".to_string(), |r| format!("{r:.1}")),
            l.cpu.map_or("-".to_string(), |c| format!("{c:.1}"))
        );
    }
    drop(src);
    drop(dst);
    for db in [&src_db, &dst_db] {
        admin_client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .unwrap();
    }
}
