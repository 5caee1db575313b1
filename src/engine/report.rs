//! What a cycle did (or, for `plan`, would do), per link and direction.

use crate::config::LinkSpec;
use crate::model::{Record, Side, Value};
use crate::state::StateStore;
use serde::Serialize;
use std::collections::BTreeMap;

/// Writes in one direction (to one side).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DirectionCounts {
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    /// Updates and deletes not made because the record changed after it was read;
    /// re-planned next run.
    pub stale_skipped: u64,
    /// Writes the system refused (quarantined with the reason).
    pub rejected: u64,
}

impl DirectionCounts {
    pub fn writes(&self) -> u64 {
        self.created + self.updated + self.deleted
    }
}

/// One planned operation, for people to read.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedLine {
    pub side: Side,
    pub op: String,
    pub key: String,
    pub field: Option<String>,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
    pub reason: String,
}

/// What a cycle found in one side's change feed.
#[derive(Debug, Clone, Serialize)]
pub struct FeedStatus {
    pub side: Side,
    pub slot: String,
    /// Records the feed said changed (each once).
    pub keys: u64,
    /// Changes skipped as syncline's own writes.
    pub own_writes: u64,
    /// Bytes of WAL the slot holds back.
    pub retained_bytes: u64,
    /// Seconds since the oldest change read was committed.
    pub lag_seconds: f64,
    /// More changes wait than one cycle takes.
    pub more: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    pub link: String,
    pub shape: String,
    /// Records read from each side (by a cursor read: only those at or past it).
    pub left_records: u64,
    pub right_records: u64,
    /// How the sides were read: `full`, or what a cursor read took and from where.
    pub reading: String,
    /// Writes to the right (left → right).
    pub to_right: DirectionCounts,
    /// Writes to the left (right → left).
    pub to_left: DirectionCounts,
    /// Linked pairs with nothing to write.
    pub unchanged: u64,
    /// Values that came back exactly as syncline wrote them last run: not news.
    pub echoes_suppressed: u64,
    /// Units held for a person in this cycle.
    pub conflicts: u64,
    /// Records or fields held in quarantine in this cycle.
    pub quarantined: u64,
    /// Edits on a side that does not own the field, reported and not corrected.
    pub drift_reported: u64,
    /// Why the safety valve refused the cycle: nothing it planned was written, but for
    /// the updates a cursor read writes as it reads (see `plan::streamed`).
    pub refused: Option<String>,
    /// Who was running this link when this run came to it: it was left alone, nothing
    /// read or written for it (see [`StateStore::hold_link`]).
    pub busy: Option<String>,
    pub warnings: Vec<String>,
    /// Each change feed read this cycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedStatus>,
    /// The first planned operations (`list_limit` of them).
    pub planned: Vec<PlannedLine>,
    /// How many operations were planned in all.
    pub planned_total: u64,
    #[serde(skip)]
    pub(crate) planned_deletes: [u64; 2],
    /// Right partners fetched to merge the left's changes with; a cursor read assumes
    /// most as the base says they are instead (see `plan::streamed`).
    pub partners_fetched: u64,
    /// Left records whose write, planned against an assumed partner, found it otherwise:
    /// fetched and decided again before the cycle ends.
    #[serde(skip)]
    pub(crate) decide_again: Vec<crate::model::Key>,
}

impl LinkReport {
    pub fn new(link: &LinkSpec) -> LinkReport {
        LinkReport {
            link: link.name.clone(),
            shape: link.shape(),
            left_records: 0,
            right_records: 0,
            reading: "full".into(),
            to_right: DirectionCounts::default(),
            to_left: DirectionCounts::default(),
            unchanged: 0,
            echoes_suppressed: 0,
            conflicts: 0,
            quarantined: 0,
            drift_reported: 0,
            refused: None,
            busy: None,
            warnings: Vec::new(),
            feeds: Vec::new(),
            planned: Vec::new(),
            planned_total: 0,
            planned_deletes: [0, 0],
            partners_fetched: 0,
            decide_again: Vec::new(),
        }
    }

    pub fn direction(&mut self, to: Side) -> &mut DirectionCounts {
        match to {
            Side::Left => &mut self.to_left,
            Side::Right => &mut self.to_right,
        }
    }

    pub fn records(&self, side: Side) -> u64 {
        match side {
            Side::Left => self.left_records,
            Side::Right => self.right_records,
        }
    }

    pub(crate) fn planned_deletes(&self, side: Side) -> u64 {
        self.planned_deletes[side as usize]
    }

    /// After applying, the quarantine count is what the store holds for the link (it
    /// includes frozen fields found in earlier runs).
    pub(crate) fn finalize_counts(
        &mut self,
        state: &mut StateStore,
    ) -> Result<(), crate::state::StateError> {
        self.quarantined = state.attention_counts(&self.link)?.1;
        Ok(())
    }

    pub fn needs_attention(&self) -> bool {
        self.conflicts > 0
            || self.quarantined > 0
            || self.to_left.rejected > 0
            || self.to_right.rejected > 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in the state store (`None` for `plan`).
    pub run: Option<i64>,
    pub links: Vec<LinkReport>,
}

impl RunReport {
    pub fn refused(&self) -> bool {
        self.links.iter().any(|l| l.refused.is_some())
    }

    pub fn needs_attention(&self) -> bool {
        self.links.iter().any(LinkReport::needs_attention)
    }

    /// Whether a link was left alone because another run held it.
    pub fn busy(&self) -> bool {
        self.links.iter().any(|l| l.busy.is_some())
    }

    pub(crate) fn status_word(&self) -> &'static str {
        if self.refused() {
            "refused"
        } else if self.needs_attention() {
            "attention"
        } else if self.busy() {
            "busy"
        } else {
            "ok"
        }
    }

    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!(self
            .links
            .iter()
            .map(|l| serde_json::json!({
                "link": l.link, "to_right": l.to_right, "to_left": l.to_left, "unchanged": l.unchanged,
                "echoes_suppressed": l.echoes_suppressed, "conflicts": l.conflicts, "quarantined": l.quarantined,
                "refused": l.refused, "busy": l.busy,
            }))
            .collect::<Vec<_>>())
    }
}

// What `verify` finds (see `engine::verify`).

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
    pub(crate) fn new(link: &str, limit: usize) -> LinkDrift {
        LinkDrift {
            link: link.to_string(),
            limit,
            ..LinkDrift::default()
        }
    }

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
