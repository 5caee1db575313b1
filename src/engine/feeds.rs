//! A link's change feeds (`feed = "logical"` on a side of `[changes]`): read before the
//! cycle reads anything, their keys handed to the planner, and confirmed only after the
//! cycle's last transaction committed. A feed that cannot say what changed (a slot made
//! anew, a TRUNCATE) turns the cycle into a full read, and the report says why.

use super::io::LinkIo;
use super::reading::Reading;
use super::report::{FeedStatus, LinkReport};
use crate::Error;
use crate::config::{Config, FeedSpec, LinkSpec};
use crate::model::Side;

/// Where each side's feed is confirmed to once the cycle is committed.
#[derive(Debug, Default)]
pub(crate) struct FeedPositions {
    upto: [Option<String>; 2],
}

/// Reads each feed of the link; hands their keys to a cycle that reads what changed, or
/// turns the cycle into a full read when a feed restarted.
pub(crate) fn read(
    config: &Config,
    link: &LinkSpec,
    io: &mut LinkIo,
    reading: &mut Reading,
    report: &mut LinkReport,
) -> Result<FeedPositions, Error> {
    let mut positions = FeedPositions::default();
    for (side, feed) in feeds_of(link) {
        let read = read_side(config, io, side, feed)?;
        report.feeds.push(FeedStatus {
            side,
            slot: feed.slot.clone(),
            keys: read.keys.len() as u64,
            own_writes: read.own_writes,
            retained_bytes: read.retained_bytes,
            lag_seconds: read.lag_seconds,
            more: read.more,
        });
        if read.retained_bytes > config.watch.max_feed_lag_bytes / 2 {
            report.warnings.push(format!(
                "the change feed's slot `{}` holds back {} MB of WAL on the server (it is made again past max_feed_lag_bytes = {} MB): keep this link running, or drop the slot if the link is retired",
                feed.slot,
                read.retained_bytes >> 20,
                config.watch.max_feed_lag_bytes >> 20
            ));
        }
        if let Some(why) = read.restarted {
            report.warnings.push(why.clone());
            if !matches!(reading, Reading::Full(_)) {
                *reading = Reading::Full(why);
            }
        } else if let Reading::Changed { keys, .. } = reading {
            keys[side as usize] = Some(read.keys);
        }
        positions.upto[side as usize] = read.upto;
    }
    Ok(positions)
}

/// What `side`'s feed holds, as the config bounds a read.
fn read_side(
    config: &Config,
    io: &mut LinkIo,
    side: Side,
    feed: &FeedSpec,
) -> Result<crate::connectors::FeedRead, Error> {
    let spec = io.layout.read_spec(side).clone();
    Ok(io.connector(side).feed_changes(
        &spec,
        feed,
        config.watch.max_feed_changes,
        config.watch.max_feed_lag_bytes,
    )?)
}

/// Marks the link's writes to each side with a feed as its own, so that feed skips them.
pub(crate) fn mark_own_writes(link: &LinkSpec, io: &mut LinkIo) -> Result<(), Error> {
    for (side, feed) in feeds_of(link) {
        io.connector(side).mark_own_writes(&feed.slot)?;
    }
    Ok(())
}

/// Moves each feed past what this cycle covered; called after its last commit.
pub(crate) fn confirm(
    link: &LinkSpec,
    io: &mut LinkIo,
    positions: &FeedPositions,
) -> Result<(), Error> {
    for (side, feed) in feeds_of(link) {
        if let Some(upto) = &positions.upto[side as usize] {
            io.connector(side).confirm_feed(feed, upto)?;
        }
    }
    Ok(())
}

/// What a link's feeds hold now, for `watch` to decide whether to run it.
#[derive(Debug, Clone, Default)]
pub struct FeedPoll {
    /// Records changed by others, waiting for a cycle.
    pub pending: u64,
    /// Per side with a feed: (side, slot, bytes of WAL held back, seconds since the
    /// oldest waiting change was committed).
    pub sides: Vec<(Side, String, u64, f64)>,
    /// A feed restarted or cannot say what changed: the link needs a full read.
    pub restarted: Option<String>,
}

/// Looks at each feed of the link (for `watch`, between cycles, on the connections the
/// cycles use). A feed holding only syncline's own writes, or holding back an eighth of
/// `max_feed_lag_bytes` of others' WAL, is confirmed past them here: nothing in them is
/// for a cycle, and an unconfirmed slot would hold back the server's WAL.
pub(crate) fn poll(config: &Config, link: &LinkSpec, io: &mut LinkIo) -> Result<FeedPoll, Error> {
    let mut poll = FeedPoll::default();
    for (side, feed) in feeds_of(link) {
        let read = read_side(config, io, side, feed)?;
        if read.restarted.is_some() {
            poll.restarted = read.restarted;
        } else if read.keys.is_empty()
            && let Some(upto) = &read.upto
            && (read.own_writes > 0 || read.retained_bytes > config.watch.max_feed_lag_bytes / 8)
        {
            // Confirmed past syncline's own writes at once, and past others' WAL once it
            // is worth the call (each confirmation decodes the slot's WAL again).
            io.connector(side).confirm_feed(feed, upto)?;
        }
        poll.pending += read.keys.len() as u64;
        poll.sides.push((
            side,
            feed.slot.clone(),
            read.retained_bytes,
            read.lag_seconds,
        ));
    }
    Ok(poll)
}

/// Each feed of a link and what its slot holds back (`Ok(None)`: no slot), read without
/// moving or making anything: for `status`, which must show a slot filling the disk
/// while nobody watches the link.
pub fn slots(config: &Config, link: &LinkSpec) -> Vec<(Side, String, Result<Option<u64>, String>)> {
    feeds_of(link)
        .map(|(side, feed)| {
            let endpoint = link.endpoint(side);
            let retained = config
                .systems
                .get(&endpoint.system)
                .ok_or_else(|| format!("no system `{}`", endpoint.system))
                .and_then(|spec| {
                    crate::connectors::open(&endpoint.system, spec)
                        .and_then(|mut c| c.feed_retained(feed))
                        .map_err(|e| crate::without_details(&e.to_string()))
                });
            (side, feed.slot.clone(), retained)
        })
        .collect()
}

/// The link's change feeds, with their sides.
fn feeds_of(link: &LinkSpec) -> impl Iterator<Item = (Side, &FeedSpec)> {
    [Side::Left, Side::Right].into_iter().filter_map(|side| {
        let feed = link.changes.as_ref()?.feed[side as usize].as_ref()?;
        Some((side, feed))
    })
}
