//! The Prometheus metrics `watch` serves on `/metrics`. Labels are link names, sides,
//! directions, outcomes and error kinds: never a record's key or value, never a URL.

use super::FeedLag;
use crate::engine::RunReport;
use crate::state::StateStore;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const RUN_SECONDS: &str = "syncline_run_duration_seconds";

/// Installs the process's metrics recorder and describes the metrics.
pub(crate) fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        // Buckets, or the histogram would be rendered as a summary.
        .set_buckets_for_metric(
            Matcher::Full(RUN_SECONDS.into()),
            &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ],
        )
        .expect("buckets are not empty")
        .build_recorder();
    let handle = recorder.handle();
    // Another recorder (a second `watch` in one process, as in tests) keeps its own.
    let _ = metrics::set_global_recorder(recorder);
    metrics::describe_counter!("syncline_runs_total", "Cycles run, by link and outcome");
    metrics::describe_counter!(
        "syncline_records_read_total",
        "Records read, by link and side"
    );
    metrics::describe_counter!(
        "syncline_records_written_total",
        "Records written, by link, direction and operation"
    );
    metrics::describe_gauge!("syncline_conflicts_open", "Open conflicts, by link");
    metrics::describe_gauge!("syncline_quarantine_size", "Quarantined entries, by link");
    metrics::describe_gauge!(
        "syncline_feed_lag_seconds",
        "Seconds since the oldest change waiting in a change feed was committed"
    );
    metrics::describe_gauge!(
        "syncline_feed_retained_bytes",
        "Bytes of WAL a change feed's slot holds back"
    );
    metrics::describe_histogram!(RUN_SECONDS, "Cycle duration in seconds, by link");
    metrics::describe_counter!("syncline_errors_total", "Errors, by link and kind");
    metrics::describe_gauge!(
        "syncline_last_success_timestamp_seconds",
        "When the link's last cycle that did not fail ended (Unix time)"
    );
    handle
}

pub(super) fn cycle(
    link: &str,
    outcome: &str,
    seconds: f64,
    report: Option<&RunReport>,
    error: Option<&crate::Error>,
) {
    let link_label = link.to_string();
    metrics::counter!("syncline_runs_total", "link" => link_label.clone(), "outcome" => outcome.to_string())
        .increment(1);
    metrics::histogram!(RUN_SECONDS, "link" => link_label.clone()).record(seconds);
    if let Some(e) = error {
        self::error(link, error_kind(e));
    }
    let Some(report) = report else { return };
    metrics::gauge!("syncline_last_success_timestamp_seconds", "link" => link_label.clone())
        .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    for l in &report.links {
        for (side, n) in [("left", l.left_records), ("right", l.right_records)] {
            metrics::counter!("syncline_records_read_total", "link" => link_label.clone(), "side" => side)
                .increment(n);
        }
        for (direction, counts) in [("to_right", &l.to_right), ("to_left", &l.to_left)] {
            for (op, n) in [
                ("create", counts.created),
                ("update", counts.updated),
                ("delete", counts.deleted),
            ] {
                metrics::counter!("syncline_records_written_total", "link" => link_label.clone(), "direction" => direction, "op" => op)
                    .increment(n);
            }
        }
        for f in &l.feeds {
            metrics::gauge!("syncline_feed_retained_bytes", "link" => link_label.clone(), "side" => f.side.to_string())
                .set(f.retained_bytes as f64);
        }
    }
}

pub(super) fn error(link: &str, kind: &'static str) {
    metrics::counter!("syncline_errors_total", "link" => link.to_string(), "kind" => kind)
        .increment(1);
}

fn error_kind(e: &crate::Error) -> &'static str {
    match e {
        crate::Error::Config(_) => "config",
        crate::Error::Connector(_) => "system",
        crate::Error::State(_) => "state_store",
        crate::Error::Refused(_) => "refused",
        crate::Error::NotFound(_) | crate::Error::Stopped | crate::Error::StopRequested => "other",
    }
}

pub(super) fn attention(link: &str, state: &mut StateStore) {
    if let Ok((open, quarantined)) = state.attention_counts(link) {
        metrics::gauge!("syncline_conflicts_open", "link" => link.to_string()).set(open as f64);
        metrics::gauge!("syncline_quarantine_size", "link" => link.to_string())
            .set(quarantined as f64);
    }
}

pub(super) fn feed_lag(link: &str, lag: &FeedLag) {
    metrics::gauge!("syncline_feed_lag_seconds", "link" => link.to_string(), "side" => lag.side.clone())
        .set(lag.lag_seconds);
    metrics::gauge!("syncline_feed_retained_bytes", "link" => link.to_string(), "side" => lag.side.clone())
        .set(lag.retained_bytes as f64);
}
