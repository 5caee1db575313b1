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

/// CPU time this process has used so far (all threads, user + system), in seconds:
/// steadier than wall time on a shared machine, and what a faster engine saves.
#[allow(dead_code)] // not every benchmark reports it
pub fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(vec![], |(_, rest)| rest.split(' ').collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f`, returning its result, how long it took and the peak RSS (MiB) while it ran.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, f64) {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    let out = f();
    (out, start.elapsed(), peak_rss_kib() as f64 / 1024.0)
}
