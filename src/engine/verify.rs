//! `verify`: both sides of a link compared record by record, writing nothing. Where a
//! `plan` says what the next run would change against the last agreed values, `verify`
//! says whether the two systems hold the same thing now: per field, how many pairs
//! differ (in the right's meaning, after transforms) and the first of them, and the
//! records that have no partner.

use super::io::LinkIo;
use super::plan::Planner;
use super::report::LinkReport;
use crate::Error;
use crate::config::Config;
use crate::model::{Record, Side, Value};
use crate::state::StateStore;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub links: Vec<LinkDrift>,
}

impl VerifyReport {
    pub fn in_step(&self) -> bool {
        self.links.iter().all(LinkDrift::in_step)
    }
}

/// What differs between the two sides of one link.
#[derive(Debug, Default, Serialize)]
pub struct LinkDrift {
    pub link: String,
    pub left_records: u64,
    pub right_records: u64,
    /// Pairs whose fields were compared (linked, or that the next run would pair).
    pub pairs_compared: u64,
    /// Per field (or field group): the pairs whose sides differ.
    pub fields: BTreeMap<String, Drifted>,
    /// Records with no partner on the other side.
    pub only_left: Drifted,
    pub only_right: Drifted,
    #[serde(skip)]
    limit: usize,
}

/// How many records differ, and the first of them.
#[derive(Debug, Default, Serialize)]
pub struct Drifted {
    pub records: u64,
    pub first: Vec<Example>,
}

#[derive(Debug, Serialize)]
pub struct Example {
    pub left_key: Option<String>,
    pub right_key: Option<String>,
    pub left: Option<String>,
    pub right: Option<String>,
}

impl Drifted {
    fn add(&mut self, limit: usize, example: Example) {
        self.records += 1;
        if self.first.len() < limit {
            self.first.push(example);
        }
    }
}

impl LinkDrift {
    pub fn in_step(&self) -> bool {
        self.fields.is_empty() && self.only_left.records == 0 && self.only_right.records == 0
    }

    /// Compares one pair's units, as `values` gives them for each side.
    pub(crate) fn compare(
        &mut self,
        units: Vec<(String, Vec<Value>, Vec<Value>)>,
        l: &Record,
        r: &Record,
    ) {
        self.pairs_compared += 1;
        for (unit, lv, rv) in units {
            let same = lv.len() == rv.len() && lv.iter().zip(&rv).all(|(a, b)| a.same_meaning(b));
            if !same {
                let show = |v: &[Value]| {
                    v.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let limit = self.limit;
                self.fields.entry(unit).or_default().add(
                    limit,
                    Example {
                        left_key: Some(l.key.display_text()),
                        right_key: Some(r.key.display_text()),
                        left: Some(show(&lv)),
                        right: Some(show(&rv)),
                    },
                );
            }
        }
    }

    /// A record whose partner is not there.
    pub(crate) fn alone(&mut self, side: Side, rec: &Record) {
        let key = Some(rec.key.display_text());
        let example = match side {
            Side::Left => Example {
                left_key: key,
                right_key: None,
                left: None,
                right: None,
            },
            Side::Right => Example {
                left_key: None,
                right_key: key,
                left: None,
                right: None,
            },
        };
        let limit = self.limit;
        match side {
            Side::Left => self.only_left.add(limit, example),
            Side::Right => self.only_right.add(limit, example),
        }
    }
}

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
        planner.verify = Some(Box::new(LinkDrift {
            link: link.name.clone(),
            limit,
            ..LinkDrift::default()
        }));
        planner.plan(left.as_mut(), right.as_mut())?;
        let mut drift = planner.verify.take().map(|d| *d).unwrap_or_default();
        drift.left_records = report.left_records;
        drift.right_records = report.right_records;
        out.links.push(drift);
    }
    Ok(out)
}
