//! The engine: one cycle per link — read → match → merge → plan → journal → apply →
//! commit.
//!
//! A cycle first plans everything, staging the plan in the state store's scratch tables
//! (so memory stays bounded by one batch, whatever the collection size). Only then are
//! the safety valves checked, and only then is anything written: `plan` is the same code
//! stopped before the writes. Applying goes batch by batch: journal the batch as
//! `planned`, write it to the systems with conditional writes, then commit the outcome
//! (base, id map, journal status) to the state store in one transaction. A crash
//! anywhere leaves a state that the next cycle re-plans correctly: a value written but
//! not committed reads as "both sides agree", a create whose outcome is unknown is found
//! again by `match_on` or the external-id field instead of being sent twice.

pub mod adapt;
mod apply;
mod explain;
mod feeds;
pub use feeds::{FeedPoll, slots as feed_slots};

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every cycle in this process to stop at its next batch boundary, with what it
/// wrote committed ([`Error::StopRequested`]); `watch` does on SIGTERM and SIGINT.
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

pub(crate) fn stop_requested() -> Result<(), Error> {
    if STOP.load(std::sync::atomic::Ordering::SeqCst) {
        Err(Error::StopRequested)
    } else {
        Ok(())
    }
}
mod first_load;
mod io;
mod layout;
mod one_behind;
mod pair_plan;
mod plan;
pub mod progress;
mod read_ahead;
mod reading;
mod report;
pub mod translate;
mod verify;

use io::LinkIo;
pub use one_behind::on_batch_done;

pub use explain::{Explanation, FieldExplanation, explain};
pub use report::{
    DirectionCounts, Drifted, Example, LinkDrift, LinkReport, PlannedLine, RunReport, VerifyReport,
};
pub use verify::verify;

use crate::Error;
use crate::config::{Config, LinkSpec};
use crate::connectors::ConnectorError;
use crate::model::Side;
use crate::state::{LinkHold, LinkReads, StateStore};
use reading::Reading;

/// What a pipeline thread calls when it is done with a batch (set once, by the binary).
/// How often a link whose connection was lost is run again within one cycle.
const LINK_RETRIES: u64 = 2;

/// How a cycle runs.
pub struct RunOptions<'a> {
    /// `false` for `plan`: stop before any write, anywhere.
    pub apply: bool,
    /// Run despite `max_delete_fraction`.
    pub allow_mass_delete: bool,
    /// Only this link.
    pub only_link: Option<String>,
    /// How many planned operations a report lists (all are counted).
    pub list_limit: usize,
    /// Called with the link's name after it is planned and before it is applied: an
    /// embedding program may show the plan or wait for a go-ahead there. Every write
    /// stays conditional on what was read, so edits made in this window (the tests make
    /// them, as a concurrent user would) are found stale, never overwritten.
    pub between_plan_and_apply: Option<&'a mut dyn FnMut(&str)>,
    /// Start over on purpose: forget the links' id maps and bases (as when a system was
    /// pointed at another database) and pair records again by their identity rules.
    pub relink: bool,
    /// A cycle change events started (`watch`): it reads what changed (feeds, cursors)
    /// and leaves the `full_every` reconciliation to a scheduled cycle.
    pub changes_only: bool,
    /// The link's systems kept open from one cycle to the next (`watch` runs one link
    /// per session); `None` opens them for this run.
    pub session: Option<&'a mut LinkSession>,
}

/// A link's systems kept open between cycles: a cycle that ends well hands its
/// connections back, one that fails drops them, and the next cycle opens them anew.
#[derive(Default)]
pub struct LinkSession {
    /// The link they belong to, and the systems.
    io: Option<(String, LinkIo)>,
}

impl LinkSession {
    /// Looks at the link's change feeds between cycles (see `feeds::poll`), on the
    /// session's connections, opened if need be; a failure drops them.
    ///
    /// # Errors
    /// A system cannot be opened, or a feed read.
    pub fn poll_feeds(&mut self, config: &Config, link: &LinkSpec) -> Result<FeedPoll, Error> {
        let io = match self.io.take() {
            Some((name, io)) if name == link.name => io,
            _ => LinkIo::open(config, link)?,
        };
        let (_, io) = self.io.insert((link.name.clone(), io));
        let polled = feeds::poll(config, link, io);
        if polled.is_err() {
            self.io = None;
        }
        polled
    }
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            apply: true,
            allow_mass_delete: false,
            only_link: None,
            list_limit: 50,
            between_plan_and_apply: None,
            relink: false,
            changes_only: false,
            session: None,
        }
    }
}

/// Runs one cycle of every link (or of `only_link`).
///
/// # Errors
/// A config error found against the systems (a column that does not exist), a system
/// that cannot be read or written, or a state store failure. Findings that need a person
/// (conflicts, quarantine, a refused valve) are not errors: they are in the report.
pub fn run_cycle(
    config: &Config,
    state: &mut StateStore,
    mut opts: RunOptions<'_>,
) -> Result<RunReport, Error> {
    if let Some(name) = &opts.only_link
        && config.link(name).is_none()
    {
        return Err(Error::NotFound(format!(
            "no link named `{name}` (links: {})",
            config
                .links
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let run_id = if opts.apply {
        state.mark_interrupted_runs()?;
        Some(state.begin_run("run")?)
    } else {
        None
    };
    let _run_span =
        tracing::info_span!("run", run = run_id.unwrap_or(0), apply = opts.apply).entered();
    let mut report = RunReport {
        run: run_id,
        links: Vec::new(),
    };
    let result = (|| -> Result<(), Error> {
        for link in &config.links {
            if opts.only_link.as_deref().is_some_and(|n| n != link.name) {
                continue;
            }
            let _span = tracing::info_span!("link", link = %link.name).entered();
            // A connection lost mid-way (a dropped network, a server that ended the
            // session) runs the link again on new connections: what was written is found
            // again as after a crash, and nothing is planned twice.
            let mut attempt = 0;
            let link_report = loop {
                match run_link(config, link, state, run_id, &mut opts) {
                    Err(Error::Connector(ConnectorError::Lost { context, source }))
                        if attempt < LINK_RETRIES =>
                    {
                        attempt += 1;
                        tracing::warn!(link = %link.name, attempt, "{context}: {source}; running the link again");
                        if let Some(run) = run_id {
                            state.run_planned_to_unknown(run)?;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
                    }
                    other => break other?,
                }
            };
            tracing::info!(
                left_read = link_report.left_records,
                right_read = link_report.right_records,
                written_right = link_report.to_right.writes(),
                written_left = link_report.to_left.writes(),
                conflicts = link_report.conflicts,
                quarantined = link_report.quarantined,
                reading = %link_report.reading,
                "link done"
            );
            report.links.push(link_report);
        }
        Ok(())
    })();
    if let Some(run) = run_id {
        let status = match &result {
            Ok(()) => report.status_word(),
            Err(e) if e.is_stop_request() => "stopped",
            Err(_) => "failed",
        };
        state.finish_run(run, status, &report.summary_json())?;
    }
    result.map(|()| report)
}

/// Runs one link, unless another run (in this or any process sharing the store) is
/// running it: that link is then left alone and the report says who holds it. `plan`
/// writes nothing, so it takes no hold.
fn run_link(
    config: &Config,
    link: &LinkSpec,
    state: &mut StateStore,
    run_id: Option<i64>,
    opts: &mut RunOptions<'_>,
) -> Result<LinkReport, Error> {
    if run_id.is_none() {
        return run_held_link(config, link, state, run_id, opts);
    }
    if let LinkHold::HeldElsewhere(holder) = state.hold_link(&link.name)? {
        tracing::warn!(link = %link.name, %holder, "link is being run elsewhere; left alone");
        let mut report = LinkReport::new(link);
        report.busy = Some(holder);
        return Ok(report);
    }
    tracing::info!("link taken");
    progress::report(progress::Progress::Link(&link.name));
    let outcome = run_held_link(config, link, state, run_id, opts);
    progress::report(progress::Progress::Done);
    let released = state.release_link(&link.name);
    tracing::info!("link let go");
    // The run's own failure matters more than a failed release, which the connection's
    // or process's end makes good anyway.
    let report = outcome?;
    released?;
    Ok(report)
}

fn run_held_link(
    config: &Config,
    link: &LinkSpec,
    state: &mut StateStore,
    run_id: Option<i64>,
    opts: &mut RunOptions<'_>,
) -> Result<LinkReport, Error> {
    let kept = opts
        .session
        .as_deref_mut()
        .and_then(|s| s.io.take())
        .and_then(|(name, io)| (name == link.name).then_some(io));
    let mut io = match kept {
        Some(io) => io,
        None => LinkIo::open(config, link)?,
    };
    let result = run_with_io(config, link, state, run_id, opts, &mut io);
    // Kept only after a cycle that ended well: a failure's connections may be broken.
    if result.is_ok()
        && let Some(session) = opts.session.as_deref_mut()
    {
        session.io = Some((link.name.clone(), io));
    }
    result
}

fn run_with_io(
    config: &Config,
    link: &LinkSpec,
    state: &mut StateStore,
    run_id: Option<i64>,
    opts: &mut RunOptions<'_>,
    io: &mut LinkIo,
) -> Result<LinkReport, Error> {
    let mut report = LinkReport::new(link);
    // A link's pairs belong to the systems they were made with: pointed at another
    // database (staging → production, a restored copy), the old pairs would put one
    // record's values on another's. Refused, nothing written, unless started over.
    let systems = [io.left.identity()?, io.right.identity()?];
    let relinking = opts.relink && run_id.is_some();
    if let Some(known) = state.link_systems(&link.name)?
        && known != systems
        && !relinking
        && state.has_pairs(&link.name)?
    {
        report.refused = Some(systems_changed(link, &known, &systems));
        return Ok(report);
    }
    if relinking {
        state.forget_link(&link.name)?;
        report.warnings.push(
            "re-linked from scratch (--relink): the id map and bases were forgotten; records were paired again by match_on, right_ref/left_ref or a carried key".into(),
        );
    }
    let run_seq = match run_id {
        Some(_) => {
            let (seq, reset) = state.begin_link_run(&link.name, &link.identity())?;
            state.set_link_systems(&link.name, &systems)?;
            if reset {
                report.warnings.push(
                    "the state store held this link for other collections or keys; its id map and base were dropped and records are re-linked by match_on / external ids".into(),
                );
            }
            seq
        }
        None => match state.link_state(&link.name)? {
            Some((identity, seq)) if identity == link.identity() => seq + 1,
            Some(_) => {
                report.warnings.push("the state store held this link for other collections or keys; `run` will drop that id map and re-link records".into());
                return Err(Error::NotFound(format!(
                    "link `{}`: the state store belongs to another config for this link; `plan` cannot show a run that first resets it",
                    link.name
                )));
            }
            None => 1,
        },
    };
    if !link.has_create_identity() {
        report.warnings.push(
            "no create identity (match_on, right_ref/left_ref or a carried key): a crash while creating records can leave creates syncline cannot find again, and they would be made twice; see `syncline check`".into(),
        );
    }
    // How to read: what changed since each side's cursor, or everything.
    let reads_before = match &link.changes {
        Some(_) => state.link_reads(&link.name)?,
        None => None,
    };
    let mut reading = reading::choose(link, reads_before.as_ref(), relinking, opts.changes_only)?;
    // Change feeds are read before anything else: a change made while the cycle reads is
    // then either in what it reads or still in the feed for the next cycle.
    let feed_positions = feeds::read(config, link, io, &mut reading, &mut report)?;
    if run_id.is_some() {
        feeds::mark_own_writes(link, io)?;
    }
    // A reconciliation by digests asks each side for its ranges' digests before
    // anything is read, so a change made while it reads shows next time.
    let pre_digests = reading::pre_digests(link, reads_before.as_ref(), io, &mut reading)?;
    if run_id.is_some() && link.changes.is_some() {
        // Marked unfinished until the run's last transaction: a run that stops half-way
        // is followed by a full read, which finds whatever it left behind.
        let mut marked = reads_before.clone().unwrap_or_default();
        marked.clean = false;
        state.set_link_reads(&link.name, &marked)?;
    }
    // The test hook between planning and the first write, called once a cycle: a streamed
    // read calls it before its first batch goes out.
    let mut hook_called = false;
    let (streamed, seen) = loop {
        state.clear_scratch()?;
        let LinkIo {
            left,
            right,
            layout,
        } = io;
        let mut planner = plan::Planner::new(
            link,
            layout,
            state,
            run_id,
            run_seq,
            &mut report,
            opts.list_limit,
        )?;
        planner.bounds_every = reading::bounds_every(link, reads_before.as_ref());
        // The stages, in order: a first load streams (plan → journal → write → commit,
        // batch by batch); any other cycle plans everything, then applies it below.
        let streamed = if planner.is_first_load(right.as_mut())? {
            reading = Reading::Full("a first load".into());
            match run_id {
                Some(run) => {
                    let mut hook = |name: &str| before_first_write(opts, &mut hook_called, name);
                    planner.report.left_records = first_load::stream(
                        &mut planner,
                        run,
                        left.as_mut(),
                        right.as_mut(),
                        Some(&mut hook),
                    )?;
                    true
                }
                None => {
                    planner.report.left_records = first_load::dry_run(&mut planner, left.as_mut())?;
                    false
                }
            }
        } else {
            let partial = match &reading {
                Reading::Changed { since, keys } => {
                    let mut hook = |name: &str| before_first_write(opts, &mut hook_called, name);
                    let stream = run_id.map(|run| (run, &mut hook as &mut dyn FnMut(&str)));
                    Some(planner.plan_changed(
                        left.as_mut(),
                        right.as_mut(),
                        since.clone(),
                        keys.clone(),
                        stream,
                    )?)
                }
                Reading::Digests { changed, .. } => {
                    let range_size = link.changes.as_ref().map_or(1, |c| c.range_size as u64);
                    Some(planner.plan_ranges(left.as_mut(), right.as_mut(), changed, range_size)?)
                }
                Reading::Full(_) => {
                    planner.plan(left.as_mut(), right.as_mut())?;
                    None
                }
            };
            if let Some(plan::ChangedRead::NeedsFullRead(why)) = partial {
                // Planned again from a full read, from a clean report that keeps what
                // the partial read already wrote (a streamed read writes as it reads).
                drop(planner);
                apply::uncount_staged(state, &mut report)?;
                let before = std::mem::replace(&mut report, LinkReport::new(link));
                report.warnings = before.warnings;
                report.to_right = before.to_right;
                report.to_left = before.to_left;
                reading = Reading::Full(why);
                continue;
            }
            false
        };
        let seen = reading::Seen {
            cursor: [Side::Left, Side::Right].map(|s| planner.cursor_seen(s).cloned()),
            bounds: planner.take_bounds(),
            splits: std::mem::take(&mut planner.splits),
        };
        break (streamed, seen);
    };
    report.reading = reading.describe();
    // Kept for the run's last transaction, which commits it with the state it covers.
    let reads_after = reading::after(link, reads_before.clone(), &reading, &seen, pre_digests)
        .map(|after| (after, reads_before));
    if streamed {
        // What the receiver filled on create and flows back was staged as the load
        // committed: written now, in this run.
        if let Some(run) = run_id {
            apply::apply_plan(link, io, state, run, run_seq, &mut report)?;
        }
        let report = finish_link(link, state, run_seq, report, reads_after)?;
        feeds::confirm(link, io, &feed_positions)?;
        return Ok(report);
    }

    let partial = !matches!(reading, Reading::Full(_));
    if let Some(why) = valve_refusal(link, &report, opts.allow_mass_delete, partial, state)? {
        report.refused = Some(why);
        return Ok(report);
    }
    let Some(run) = run_id else { return Ok(report) };
    before_first_write(opts, &mut hook_called, &link.name);
    apply::apply_plan(link, io, state, run, run_seq, &mut report)?;
    let report = finish_link(link, state, run_seq, report, reads_after)?;
    feeds::confirm(link, io, &feed_positions)?;
    Ok(report)
}

/// Calls the options' `between_plan_and_apply` hook, unless this cycle already did.
fn before_first_write(opts: &mut RunOptions<'_>, called: &mut bool, link: &str) {
    if !std::mem::replace(called, true)
        && let Some(hook) = opts.between_plan_and_apply.as_mut()
    {
        hook(link);
    }
}

/// Why a link whose systems changed is refused: which side, what it was, what it is,
/// and how to start over on purpose.
fn systems_changed(link: &LinkSpec, known: &[String; 2], now: &[String; 2]) -> String {
    let changes: Vec<String> = [Side::Left, Side::Right]
        .into_iter()
        .zip(known.iter().zip(now))
        .filter(|(_, (was, is))| was != is)
        .map(|(side, (was, is))| format!("the {side} was {was}, and is now {is}"))
        .collect();
    format!(
        "its pairs were made with other systems: {}. Applying them here could write one record's values onto another's, so nothing was written. If the new system is the right one, start over on purpose with `syncline run --link {} --relink`: the link's id map and bases are forgotten and records are paired again by match_on, right_ref/left_ref or a carried key",
        changes.join("; "),
        link.name
    )
}

/// Forgets findings this run did not make again, and counts what is quarantined.
fn finish_link(
    link: &LinkSpec,
    state: &mut StateStore,
    run_seq: i64,
    mut report: LinkReport,
    reads: Option<(LinkReads, Option<LinkReads>)>,
) -> Result<LinkReport, Error> {
    let reads = reads.map(|(after, before)| {
        let stale = report.to_right.stale_skipped + report.to_left.stale_skipped;
        reading::held_if_stale(after, before.as_ref(), stale)
    });
    state.transaction(|s| {
        s.prune_conflicts(&link.name, run_seq)?;
        s.prune_quarantine(&link.name, run_seq)?;
        // The cursors advance with the run's last transaction, after every batch they
        // cover has committed: never ahead of the state.
        match &reads {
            Some(r) => s.set_link_reads(&link.name, r),
            None => Ok(()),
        }
    })?;
    report.finalize_counts(state)?;
    Ok(report)
}

/// The safety valves: a run that would delete more than `max_delete_fraction` of a
/// collection, or link two non-empty collections with no way to tell which records are
/// the same, is refused before anything is written.
fn valve_refusal(
    link: &LinkSpec,
    report: &LinkReport,
    allow_mass_delete: bool,
    partial: bool,
    state: &mut StateStore,
) -> Result<Option<String>, Error> {
    // A cycle that read what changed (by cursor or digests) read a part of each side:
    // its deletes are weighed against the collection, as its linked pairs count it.
    // Counted only when a delete is planned: counting a large link's pairs costs a scan.
    let any_deletes = [Side::Left, Side::Right]
        .iter()
        .any(|s| report.planned_deletes(*s) > 0);
    let linked = if partial && any_deletes {
        u64::try_from(state.pair_count(&link.name)?).unwrap_or(0)
    } else {
        0
    };
    for side in [Side::Left, Side::Right] {
        let deletes = report.planned_deletes(side);
        let total = report.records(side).max(linked);
        if !allow_mass_delete
            && deletes > 0
            && deletes as f64 > link.max_delete_fraction * total as f64
        {
            return Ok(Some(format!(
                "would delete {deletes} of {total} records on the {side} ({}), more than max_delete_fraction = {}; check the plan, then run with --allow-mass-delete if it is right",
                link.endpoint(side).label(),
                link.max_delete_fraction
            )));
        }
    }
    if !link.has_create_identity()
        && report.to_right.created > 0
        && !state.has_pairs(&link.name)?
        && report.records(Side::Right) > 0
    {
        return Ok(Some(format!(
            "both {} and {} already hold records, and the link has no match_on, left_ref/right_ref or carried key to tell which are the same: every record would be created again as a duplicate",
            link.left.label(),
            link.right.label()
        )));
    }
    Ok(None)
}

/// Opens a link's systems and checks every column it names (for `check`). Returns what
/// to warn about, as (rule, message): a key nothing keeps unique; on a link whose fields
/// mean different things, the records whose values have no meaning on the other side or
/// would not survive the way back (the run quarantines them).
///
/// # Errors
/// A system that cannot be opened, or read, or a config error located in the file.
pub fn check_against_systems(
    config: &Config,
    link: &LinkSpec,
) -> Result<Vec<(&'static str, String)>, Error> {
    let mut io = LinkIo::open(config, link)?;
    let mut found: Vec<(&'static str, String)> = std::mem::take(&mut io.layout.warnings)
        .into_iter()
        .map(|w| ("key-unique", w))
        .collect();
    for side in [Side::Left, Side::Right] {
        let caps = io.connector(side).capabilities();
        if caps.conditional == crate::connectors::Conditional::None {
            found.push((
                "lost-updates",
                format!(
                    "the {side} ({}) cannot make a write conditional on what was read: syncline re-reads each record just before writing it, but an edit made in between is overwritten",
                    link.endpoint(side).system
                ),
            ));
        }
    }
    if translate::needs_translation(link) {
        found.extend(
            translate::untranslatable(link, io.left.as_mut(), io.right.as_mut(), &io.layout)?
                .into_iter()
                .map(|m| ("meaning-data", m)),
        );
    }
    Ok(found)
}
