//! The three-way merge: for one unit (a field, or a field group decided as one) of one
//! linked record pair, compare the left value, the right value and the base — the last
//! value both sides agreed on — and decide what, if anything, to write.
//!
//! Pure: no I/O, no clock reads. The planner in `engine` calls [`decide`] for every unit of
//! every pair, so everything that makes two-way sync safe is decided here:
//! - a value equal to the base is not a change, so syncline's own writes never come back
//!   as news (echo suppression) and a run after a run writes nothing;
//! - a field has an owner; the other side's edits to it are drift;
//! - when both sides changed, a policy decides or a person does — clocks only break ties
//!   under `newest`, and only beyond the skew tolerance.

use crate::config::{Mode, OnDrift, Owner, Policy};
use crate::model::{Side, Value};

/// The rule that governs one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitRule {
    pub owner: Owner,
    pub policy: Policy,
    pub mode: Mode,
    pub on_drift: OnDrift,
}

/// Why a value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The owning side changed it (for `both`, the side that changed it).
    Changed(Side),
    /// The side that does not own it changed it; the owner's value is put back.
    DriftCorrection,
    /// Both sides changed it; the policy chose.
    Policy(Policy),
    /// No base yet (first link, or a lost state store): the owner rule chose.
    FirstLink(Owner),
}

impl Reason {
    pub fn describe(self) -> String {
        match self {
            Reason::Changed(side) => format!("changed on {side}"),
            Reason::DriftCorrection => "drift correction (owner's value restored)".into(),
            Reason::Policy(p) => format!("conflict policy {}", p.as_str()),
            Reason::FirstLink(o) => format!("first link: owner {}", o.as_str()),
        }
    }
}

/// Why a unit is held for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCause {
    /// The policy is `manual`.
    Manual,
    /// `newest`, but the clocks are within the skew tolerance of each other.
    ClockTie,
    /// `newest`, but a clock value is missing or unreadable.
    NoClock,
    /// `prefer-non-empty`, but both values are filled.
    BothFilled,
}

impl ConflictCause {
    pub fn describe(self) -> &'static str {
        match self {
            ConflictCause::Manual => "both sides changed; policy manual",
            ConflictCause::ClockTie => "both sides changed; clocks within the skew tolerance",
            ConflictCause::NoClock => "both sides changed; a clock value is missing",
            ConflictCause::BothFilled => {
                "both sides changed to non-empty values (prefer-non-empty)"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Both sides hold the base value.
    Unchanged,
    /// Both sides hold the same value, which is not (yet) the base: record it as agreed.
    Agreed,
    /// Write the other side's value to `to`; it becomes the base once written.
    Write { to: Side, reason: Reason },
    /// The side that does not own the unit changed it, and the link only reports drift.
    DriftReported { on: Side },
    /// Hold for a person.
    Conflict(ConflictCause),
}

/// When each side says its record last changed, in seconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clocks {
    pub left: Option<f64>,
    pub right: Option<f64>,
    pub skew_seconds: f64,
}

/// Decides one unit whose base both sides hold as the same values. `left`, `right` and
/// `base` hold one value per field of the unit, already normalized by the fields'
/// transforms.
pub fn decide(
    rule: &UnitRule,
    left: &[Value],
    right: &[Value],
    base: Option<&[Value]>,
    clocks: Clocks,
) -> Decision {
    decide_sides(rule, left, right, base.map(|b| [b, b]), clocks)
}

/// Decides one unit against each side's own base (`[left, right]`): what that side's
/// system held when the two last agreed, which differs from the other side's when a
/// system keeps a value in its own form (a trigger re-cased it, a column rounded it, a
/// default filled it). A side changed only if it no longer holds its own base, so a
/// system's rewrite of what syncline wrote is an echo, never news.
pub fn decide_sides(
    rule: &UnitRule,
    left: &[Value],
    right: &[Value],
    base: Option<[&[Value]; 2]>,
    clocks: Clocks,
) -> Decision {
    if same_meaning(left, right) {
        return if base.is_some_and(|[bl, br]| bl == left && br == right) {
            Decision::Unchanged
        } else {
            Decision::Agreed
        };
    }
    let Some([base_left, base_right]) = base else {
        return match rule.owner {
            Owner::Left => Decision::Write {
                to: Side::Right,
                reason: Reason::FirstLink(Owner::Left),
            },
            Owner::Right => Decision::Write {
                to: Side::Left,
                reason: Reason::FirstLink(Owner::Right),
            },
            Owner::Both => by_policy(rule.policy, left, right, clocks),
        };
    };
    let left_changed = left != base_left;
    let right_changed = right != base_right;
    if !left_changed && !right_changed {
        // Each side still holds what it held at the last agreement.
        return Decision::Unchanged;
    }
    match rule.owner {
        Owner::Left | Owner::Right => {
            let owner = if rule.owner == Owner::Left {
                Side::Left
            } else {
                Side::Right
            };
            let owner_changed = if owner == Side::Left {
                left_changed
            } else {
                right_changed
            };
            if owner_changed {
                Decision::Write {
                    to: owner.other(),
                    reason: Reason::Changed(owner),
                }
            } else {
                match rule.on_drift {
                    OnDrift::Correct => Decision::Write {
                        to: owner.other(),
                        reason: Reason::DriftCorrection,
                    },
                    OnDrift::Report => Decision::DriftReported { on: owner.other() },
                }
            }
        }
        Owner::Both => match (left_changed, right_changed) {
            (true, false) => Decision::Write {
                to: Side::Right,
                reason: Reason::Changed(Side::Left),
            },
            (false, true) => Decision::Write {
                to: Side::Left,
                reason: Reason::Changed(Side::Right),
            },
            _ => by_policy(rule.policy, left, right, clocks),
        },
    }
}

fn by_policy(policy: Policy, left: &[Value], right: &[Value], clocks: Clocks) -> Decision {
    let win = |side: Side| Decision::Write {
        to: side.other(),
        reason: Reason::Policy(policy),
    };
    match policy {
        Policy::LeftWins => win(Side::Left),
        Policy::RightWins => win(Side::Right),
        Policy::Manual => Decision::Conflict(ConflictCause::Manual),
        Policy::PreferNonEmpty => {
            let empty = |vs: &[Value]| vs.iter().all(Value::is_empty);
            match (empty(left), empty(right)) {
                (true, false) => win(Side::Right),
                (false, true) => win(Side::Left),
                _ => Decision::Conflict(ConflictCause::BothFilled),
            }
        }
        Policy::Newest => match (clocks.left, clocks.right) {
            (Some(l), Some(r)) if (l - r).abs() > clocks.skew_seconds => {
                win(if l > r { Side::Left } else { Side::Right })
            }
            (Some(_), Some(_)) => Decision::Conflict(ConflictCause::ClockTie),
            _ => Decision::Conflict(ConflictCause::NoClock),
        },
    }
}

/// Whether two sides' values of a unit already mean the same, field by field (see
/// [`Value::same_meaning`]): nothing to write, whatever representation each holds.
pub fn same_meaning(left: &[Value], right: &[Value]) -> bool {
    left.len() == right.len() && left.iter().zip(right).all(|(l, r)| l.same_meaning(r))
}

/// Reads a clock column's value as seconds since the epoch: integers and reals are epoch
/// seconds (or milliseconds when too large to be seconds); text is RFC 3339 or
/// `YYYY-MM-DD HH:MM:SS[.fff]` (taken as UTC).
pub fn clock_seconds(v: &Value) -> Option<f64> {
    // 10^11 seconds is the year 5138; anything larger is milliseconds.
    let scale = |x: f64| if x.abs() >= 1e11 { x / 1000.0 } else { x };
    match v {
        Value::Integer(i) => Some(scale(*i as f64)),
        Value::Real(r) if r.is_finite() => Some(scale(*r)),
        Value::Text(t) => {
            let t = t.trim();
            if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
                return Some(dt.timestamp_micros() as f64 / 1e6);
            }
            for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
                if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, fmt) {
                    return Some(n.and_utc().timestamp_micros() as f64 / 1e6);
                }
            }
            chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|n| n.and_utc().timestamp() as f64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
