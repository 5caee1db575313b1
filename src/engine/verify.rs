//! `verify`: both sides of a link compared record by record, writing nothing. Where a
//! `plan` says what the next run would change against the last agreed values, `verify`
//! says whether the two systems hold the same thing now: per field, how many pairs
//! differ (in the right's meaning, after transforms) and the first of them, and the
//! records that have no partner.

use super::io::LinkIo;
use super::plan::Planner;
use super::report::LinkReport;
use super::report::{LinkDrift, VerifyReport};
use crate::Error;
use crate::config::Config;
use crate::state::StateStore;

/// Compares both sides of every link (or `only_link`), listing at most `limit` examples
/// of each difference. Reads both systems in full; writes nothing to them or to the store.
///
/// # Errors
/// A link that does not exist, a system that cannot be read, a store that cannot be read.
pub fn verify(
    config: &Config,
    state: &mut StateStore,
    only_link: Option<&str>,
    limit: usize,
) -> Result<VerifyReport, Error> {
    if let Some(name) = only_link
        && config.link(name).is_none()
    {
        return Err(Error::NotFound(format!("no link named `{name}`")));
    }
    let mut out = VerifyReport::default();
    for link in &config.links {
        if only_link.is_some_and(|n| n != link.name) {
            continue;
        }
        let mut io = LinkIo::open(config, link)?;
        let mut report = LinkReport::new(link);
        state.clear_scratch()?;
        let LinkIo {
            left,
            right,
            layout,
        } = &mut io;
        let mut planner = Planner::new(link, layout, state, None, 0, &mut report, 0)?;
        planner.verify = Some(Box::new(LinkDrift::new(&link.name, limit)));
        planner.plan(left.as_mut(), right.as_mut())?;
        let mut drift = planner.verify.take().map(|d| *d).unwrap_or_default();
        drift.left_records = report.left_records;
        drift.right_records = report.right_records;
        out.links.push(drift);
    }
    Ok(out)
}
