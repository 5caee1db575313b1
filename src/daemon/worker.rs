//! One link's schedule: a cycle every `every`; with a change feed, a cycle as soon as
//! the feed holds others' changes (after `debounce`, so a burst is one cycle); after a
//! failure, the next try backs off (doubling, with jitter, at most `every`).

use super::{FeedLag, Shared, jitter, metrics, now_text};
use crate::config::LinkSpec;
use crate::engine::{self, LinkSession, RunOptions};
use crate::state::StateStore;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How often a link with a change feed looks at it between cycles.
const FEED_POLL: Duration = Duration::from_millis(100);
/// The first retry after a failure; doubled per failure, capped at `every`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared, name: &str, stop: &AtomicBool) {
    let config = shared.config();
    let Some(link) = config.link(name) else {
        return;
    };
    let every = link.every.unwrap_or(config.watch.every);
    let debounce = link.debounce.unwrap_or(config.watch.debounce);
    let has_feed = link
        .changes
        .as_ref()
        .is_some_and(|c| c.feed.iter().any(Option::is_some));
    let mut state: Option<StateStore> = None;
    let mut next_scheduled = Instant::now();
    let mut failures: u32 = 0;
    let mut warned = std::collections::HashSet::new();
    // The link's systems stay open from one cycle to the next.
    let mut session = LinkSession::default();
    let stopped = || {
        stop.load(std::sync::atomic::Ordering::SeqCst)
            || shared.stopping.load(std::sync::atomic::Ordering::SeqCst)
    };
    while !stopped() {
        let scheduled = Instant::now() >= next_scheduled;
        let mut changed = false;
        if !scheduled && has_feed && failures == 0 {
            match poll(&config, link, &mut session, shared) {
                Ok(true) => {
                    // A burst of changes becomes one cycle.
                    shared.sleep_until(Instant::now() + debounce, stop);
                    changed = true;
                }
                Ok(false) => {}
                Err(e) => {
                    // Backs off as a failed cycle does; the scheduled cycle tries again.
                    failures += 1;
                    let backoff = retry_after(failures, every);
                    tracing::warn!(
                        retry_in_seconds = backoff.as_secs_f64(),
                        "change feed: {}",
                        crate::without_details(&e.to_string())
                    );
                    metrics::error(name, "feed");
                    next_scheduled = Instant::now() + backoff;
                }
            }
        }
        if stopped() {
            break;
        }
        if scheduled || changed {
            let changes_only = !scheduled;
            match cycle(
                shared,
                &config,
                link,
                &mut state,
                changes_only,
                &mut warned,
                &mut session,
            ) {
                Ok(()) => {
                    failures = 0;
                    if scheduled {
                        next_scheduled = Instant::now() + every;
                    }
                }
                Err(e) => {
                    state = None;
                    failures += 1;
                    let backoff = retry_after(failures, every);
                    tracing::error!(
                        failures,
                        retry_in_seconds = backoff.as_secs_f64(),
                        "cycle failed: {}",
                        crate::without_details(&e.to_string())
                    );
                    next_scheduled = Instant::now() + backoff;
                }
            }
            continue;
        }
        let wake = if has_feed && failures == 0 {
            (Instant::now() + FEED_POLL).min(next_scheduled)
        } else {
            next_scheduled
        };
        shared.sleep_until(wake, stop);
    }
}

/// How long after the `failures`-th failure in a row to try again: 1 s, 2 s, 4 s … with
/// jitter, at most `every`.
fn retry_after(failures: u32, every: Duration) -> Duration {
    jitter(
        FIRST_RETRY
            .saturating_mul(1 << failures.saturating_sub(1).min(16))
            .min(every.max(FIRST_RETRY)),
    )
}

/// Whether the link's feeds hold others' changes; records their lag.
fn poll(
    config: &crate::config::Config,
    link: &LinkSpec,
    session: &mut LinkSession,
    shared: &Shared,
) -> Result<bool, crate::Error> {
    let found = session.poll_feeds(config, link)?;
    let lags: Vec<FeedLag> = found
        .sides
        .iter()
        .map(|(side, slot, bytes, secs)| FeedLag {
            side: side.to_string(),
            slot: slot.clone(),
            retained_bytes: *bytes,
            lag_seconds: *secs,
        })
        .collect();
    for lag in &lags {
        metrics::feed_lag(&link.name, lag);
    }
    shared.update(&link.name, |s| s.feeds = lags);
    Ok(found.pending > 0 || found.restarted.is_some())
}

/// One cycle of the link, its outcome recorded in the status and the metrics.
fn cycle(
    shared: &Shared,
    config: &crate::config::Config,
    link: &LinkSpec,
    state: &mut Option<StateStore>,
    changes_only: bool,
    warned: &mut std::collections::HashSet<String>,
    session: &mut LinkSession,
) -> Result<(), crate::Error> {
    let started = Instant::now();
    shared.update(&link.name, |s| {
        s.running = true;
        s.last_started = Some(now_text());
    });
    let result = (|| {
        let store = match state {
            Some(s) => s,
            None => state.insert(StateStore::for_config(&config.state, false)?),
        };
        engine::run_cycle(
            config,
            store,
            RunOptions {
                apply: true,
                only_link: Some(link.name.clone()),
                list_limit: 0,
                changes_only,
                session: Some(session),
                ..RunOptions::default()
            },
        )
    })();
    let seconds = started.elapsed().as_secs_f64();
    if let Ok(report) = &result {
        // Each warning once per worker, not once per cycle.
        for warning in report.links.iter().flat_map(|l| &l.warnings) {
            if warned.insert(warning.clone()) {
                tracing::warn!("{}", crate::without_details(warning));
            }
        }
    }
    let (outcome, error) = match &result {
        Ok(report) => {
            let outcome = report.links.first().map_or("ok", |l| {
                if l.refused.is_some() {
                    "refused"
                } else if l.busy.is_some() {
                    "busy"
                } else if l.needs_attention() {
                    "attention"
                } else {
                    "ok"
                }
            });
            (outcome, None)
        }
        Err(e) if e.is_stop_request() => ("stopped", None),
        Err(e) => ("failed", Some(e.to_string())),
    };
    metrics::cycle(
        &link.name,
        outcome,
        seconds,
        result.as_ref().ok(),
        result.as_ref().err(),
    );
    if let Some(store) = state.as_mut() {
        metrics::attention(&link.name, store);
    }
    shared.update(&link.name, |s| {
        s.running = false;
        s.cycles += 1;
        s.last_finished = Some(now_text());
        s.last_outcome = Some(outcome.to_string());
        s.last_duration_seconds = Some(seconds);
        if let Ok(report) = &result
            && let Some(l) = report.links.first()
        {
            s.last_reading = Some(l.reading.clone());
            s.feeds = l
                .feeds
                .iter()
                .map(|f| FeedLag {
                    side: f.side.to_string(),
                    slot: f.slot.clone(),
                    retained_bytes: f.retained_bytes,
                    lag_seconds: 0.0,
                })
                .collect();
        }
        s.consecutive_failures = if error.is_some() {
            s.consecutive_failures + 1
        } else {
            0
        };
        s.last_error = error;
    });
    match result {
        Err(e) if e.is_stop_request() => Ok(()),
        other => other.map(|_| ()),
    }
}
