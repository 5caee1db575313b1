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

/// Runs `f`, returning its result, how long it took and the peak RSS (MiB) while it ran.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, f64) {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    let out = f();
    (out, start.elapsed(), peak_rss_kib() as f64 / 1024.0)
}
