//! What one cycle does to one record pair: the [`PairPlan`] the planner makes and the
//! applier carries out, and how its base settles once the writes are known.

use crate::connectors::Write;
use crate::model::{Key, Name, Side, Value};
use crate::state::{Change, Held, PairRow};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happens to the pair's id-map row when the plan's writes succeed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Fate {
    /// Keep (or, for a newly matched pair, insert) the row with the new base.
    Keep,
    /// A record is created on this side; the row gets its new key.
    Create(Side),
    /// The record on this side is deleted; the row goes.
    Delete(Side),
    /// The record on `survivor` is soft-deleted (or, without a write, left alone): the
    /// row is kept as a tombstone so nothing is re-created.
    Tombstone { deleted_on: Side },
    /// Both records are gone: the row goes.
    Forget,
}

/// Everything one cycle does to one record pair. Indexed by side: `[left, right]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PairPlan {
    pub left_key: Option<Key>,
    pub right_key: Option<Key>,
    pub fate: Fate,
    pub writes: [Option<Write>; 2],
    /// The base after this cycle for fields that do not depend on a write.
    pub base: BTreeMap<Name, Value>,
    /// Base fields that take effect only if the write to that side succeeds.
    pub base_if: [BTreeMap<Name, Value>; 2],
    /// What each side holds where it is not exactly the base (see [`Held`]).
    #[serde(default)]
    pub held: Held,
    /// For the write to a side, what the *other* side then holds of each field it sets:
    /// its current value when only this side is written, its old base when both are.
    #[serde(default)]
    pub holds_if: [BTreeMap<Name, Value>; 2],
    pub marks: BTreeMap<String, crate::state::Mark>,
    pub marks_if: [BTreeMap<String, crate::state::Mark>; 2],
    /// Journal entries for each side's write; `state_changes` for the id map alone.
    pub changes: [Vec<Change>; 2],
    pub state_changes: Vec<Change>,
    pub tombstone: Option<Side>,
    /// Planned against the right record as the base says it is, without fetching it
    /// (see `plan::streamed`): a write of it found stale says only that the record is
    /// not as assumed, and it is fetched and decided again in the same cycle.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assumed: bool,
}

impl PairPlan {
    pub(crate) fn new(
        left_key: Option<Key>,
        right_key: Option<Key>,
        fate: Fate,
        pair: Option<PairRow>,
    ) -> PairPlan {
        // The plan takes the pair's base and marks as they are: it replaces the pair.
        let (base, marks, tombstone, held) =
            pair.map_or_else(Default::default, |p| (p.base, p.marks, p.tombstone, p.held));
        PairPlan {
            left_key,
            right_key,
            fate,
            writes: [None, None],
            base,
            base_if: Default::default(),
            held,
            holds_if: Default::default(),
            marks,
            marks_if: Default::default(),
            changes: Default::default(),
            state_changes: Vec::new(),
            tombstone,
            assumed: false,
        }
    }

    /// Moves the base for writes that took effect (or turned out not to be needed),
    /// by side: each field's base becomes the value written; the written side holds what
    /// its system stored (`stored`: field → value read back, normalized), the other side
    /// what it held. Both sides' other-side values go first, so that when both were
    /// written each side ends with its own read-back. Last, `side_effects`: fields the
    /// write did not set but the system changed with it (a trigger), by field → (value
    /// read, value stored): that side now holds its own form of a value it was not
    /// changing, an echo like any other.
    pub fn settle(
        &mut self,
        done: [bool; 2],
        stored: &[BTreeMap<Name, Value>; 2],
        side_effects: &[BTreeMap<Name, (Value, Value)>; 2],
    ) {
        let targets: [BTreeMap<Name, Value>; 2] = [0, 1].map(|idx| {
            if done[idx] {
                std::mem::take(&mut self.base_if[idx])
            } else {
                BTreeMap::new()
            }
        });
        for idx in [0, 1] {
            for (name, target) in &targets[idx] {
                match self.holds_if[idx].remove(name) {
                    Some(v) if v != *target => self.held[1 - idx].insert(name.clone(), v),
                    _ => self.held[1 - idx].remove(name),
                };
            }
        }
        for idx in [0, 1] {
            for (name, target) in &targets[idx] {
                match stored[idx].get(name) {
                    Some(v) if v != target => self.held[idx].insert(name.clone(), v.clone()),
                    _ => self.held[idx].remove(name),
                };
                self.base.insert(name.clone(), target.clone());
            }
        }
        for idx in [0, 1] {
            if !done[idx] {
                continue;
            }
            for (name, (read, now)) in &side_effects[idx] {
                let Some(base) = self.base.get(name) else {
                    continue;
                };
                if self.held[idx].get(name).unwrap_or(base) != read {
                    continue;
                }
                if now == base {
                    self.held[idx].remove(name);
                } else {
                    self.held[idx].insert(name.clone(), now.clone());
                }
            }
        }
    }
}
