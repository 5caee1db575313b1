//! Measuring helpers shared by the benchmarks.

use std::time::{Duration, Instant};

/// Peak resident memory of this process since the last reset, in KiB (Linux VmHWM).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Flushes every file written so far to disk (`sync`), so the next timed phase does not
/// share the machine with the kernel writing back the phase before's files.
#[allow(dead_code)] // the http benchmark does not use it
pub fn flush_written_files() {
    if let Err(e) = std::process::Command::new("sync").status() {
        println!("sync did not run ({e}): phases may pay for each other's writeback");
    }
}

/// Runs `f`, returning its result, how long it took and the peak RSS (MiB) while it ran.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, f64) {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    let out = f();
    (out, start.elapsed(), peak_rss_kib() as f64 / 1024.0)
}

/// One run of the `syncline` binary, as a user starts it.
#[allow(dead_code)] // each benchmark uses part of this
pub struct BinaryRun {
    /// The run's report (`run --json`).
    pub report: serde_json::Value,
    pub elapsed: Duration,
    /// The process's peak resident memory, MiB (`None` without GNU `time`).
    pub peak_rss_mib: Option<f64>,
    /// User + system CPU seconds, all threads (`None` without GNU `time`).
    pub cpu_secs: Option<f64>,
}

impl BinaryRun {
    /// `report.links[0].<direction>.<counter>`.
    #[allow(dead_code)]
    pub fn count(&self, direction: &str, counter: &str) -> u64 {
        self.report["links"][0][direction][counter]
            .as_u64()
            .unwrap_or_else(|| panic!("no {direction}.{counter} in {}", self.report))
    }
}

/// Runs `syncline run --json` on `dir/syncline.toml` in its own process under GNU
/// `time`, so memory and CPU are the binary's own (its allocator included) and nothing
/// of the benchmark's process counts. Without `/usr/bin/time` (GNU), the run is timed
/// alone.
#[allow(dead_code)]
pub fn run_syncline_binary(dir: &std::path::Path) -> BinaryRun {
    run_syncline_binary_expecting(dir, 0)
}

/// [`run_syncline_binary`] for a run expected to end with exit code `code` (a run that
/// fails prints `{"error": …, "exit_code": …}` as its report).
#[allow(dead_code)]
pub fn run_syncline_binary_expecting(dir: &std::path::Path, code: i32) -> BinaryRun {
    let measures = dir.join("time.out");
    let _ = std::fs::remove_file(&measures);
    let gnu_time = std::path::Path::new("/usr/bin/time").exists();
    let mut command = if gnu_time {
        let mut c = std::process::Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&measures)
            .arg(env!("CARGO_BIN_EXE_syncline"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_syncline"))
    };
    command
        .arg("--config")
        .arg(dir.join("syncline.toml"))
        .args(["run", "--json"])
        .current_dir(dir);
    let start = Instant::now();
    let out = command.output().expect("the syncline binary runs");
    let elapsed = start.elapsed();
    assert!(
        out.status.code() == Some(code),
        "syncline run ended with {} where {code} was expected: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `%M %U %S`: peak RSS in KiB, user and system seconds. Absent or unparsable (a
    // `time` that is not GNU's) leaves them unknown.
    // The last line: before it, GNU `time` says when the command exited non-zero.
    let fields: Vec<f64> = std::fs::read_to_string(&measures)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let known = fields.len() == 3;
    BinaryRun {
        report: serde_json::from_slice(&out.stdout).expect("run --json prints its report"),
        elapsed,
        peak_rss_mib: known.then(|| fields[0] / 1024.0),
        cpu_secs: known.then(|| fields[1] + fields[2]),
    }
}
