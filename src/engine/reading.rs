//! How a cycle reads a link's sides (`[links.NAME.changes]`): whole, by cursor, or by
//! the key ranges whose digests changed; and what it leaves in the state store for the
//! next cycle (cursor positions, ranges and their digests).

use super::io::LinkIo;
use crate::Error;
use crate::config::{LinkSpec, Reconcile};
use crate::connectors::{ConnectorError, KeyRange, RangeDigest};
use crate::model::{Key, Side, Value};
use crate::state::{LinkReads, Ranges, StateError};

/// How a cycle reads a link's sides.
pub(crate) enum Reading {
    /// Both sides whole; says why when the link reads by cursor.
    Full(String),
    /// What changed: per side, where its read starts (`None`: not read; only partners
    /// are fetched from it).
    Changed {
        since: [Option<crate::connectors::Since>; 2],
        /// Per side, the keys its change feed says changed (`None`: no feed).
        keys: [Option<Vec<Key>>; 2],
    },
    /// The key ranges whose digests changed, per side, of how many.
    Digests {
        /// (range index, its keys), per side.
        changed: [Vec<(usize, KeyRange)>; 2],
        of: [usize; 2],
    },
}

impl Reading {
    pub(crate) fn describe(&self) -> String {
        match self {
            Reading::Digests { changed, of } => format!(
                "digests: {} of {} left ranges changed, {} of {} right ranges",
                changed[0].len(),
                of[0],
                changed[1].len(),
                of[1]
            ),
            Reading::Full(why) if why.is_empty() => "full".into(),
            Reading::Full(why) => format!("full ({why})"),
            Reading::Changed { since, keys } => [Side::Left, Side::Right]
                .iter()
                .map(
                    |&side| match (&since[side as usize], &keys[side as usize]) {
                        (Some(s), _) => format!("{side} changes since {} >= {}", s.column, s.value),
                        (None, Some(k)) => {
                            format!("{side} {} record(s) from its change feed", k.len())
                        }
                        (None, None) => format!("{side} not read (its edits wait for a full read)"),
                    },
                )
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Reads by cursor when the link has `[changes]`, a position for each cursor side, the
/// last run ended, and a full read is not due.
pub(crate) fn choose(
    link: &LinkSpec,
    reads: Option<&LinkReads>,
    relinking: bool,
    changes_only: bool,
) -> Result<Reading, Error> {
    let Some(changes) = &link.changes else {
        return Ok(Reading::Full(String::new()));
    };
    let full = |why: &str| Ok(Reading::Full(why.to_string()));
    let Some(reads) = reads else {
        return full("nothing read yet");
    };
    if relinking {
        return full("re-linking");
    }
    if !reads.clean {
        return full("the last run of this link did not finish");
    }
    if reads.fields.as_deref() != Some(fields_fingerprint(link).as_str()) {
        return full("the link's fields changed since the last read");
    }
    let has_cursor =
        changes.cursor.iter().any(Option::is_some) || changes.feed.iter().any(Option::is_some);
    // A cycle that change events started reads what changed; the scheduled cycles make
    // the reconciliations.
    let due = reads.since_full + 1 >= changes.full_every && !changes_only;
    if !has_cursor || due {
        if changes.reconcile == Reconcile::Digests {
            return Ok(match &reads.ranges {
                [Some(l), Some(r)] => Reading::Digests {
                    changed: [Vec::new(), Vec::new()],
                    of: [l.bounds.len() + 1, r.bounds.len() + 1],
                },
                _ => Reading::Full(
                    reads
                        .no_ranges
                        .clone()
                        .unwrap_or_else(|| "key ranges not known yet".into()),
                ),
            });
        }
        if !has_cursor {
            return full("");
        }
        return full(&format!(
            "every {} cycles, to find deletes",
            changes.full_every
        ));
    }
    let mut since = [None, None];
    for side in [Side::Left, Side::Right] {
        let i = side as usize;
        let Some(cursor) = &changes.cursor[i] else {
            continue;
        };
        if reads.cursor_columns[i].as_deref() != Some(cursor.column.as_str()) {
            return full(&format!(
                "the {side} cursor is a new column, `{}`",
                cursor.column
            ));
        }
        let Some(position) = &reads.cursor[i] else {
            return full(&format!("no cursor position yet for the {side}"));
        };
        let position = crate::model::Key::decode(position)
            .ok()
            .and_then(|k| k.0.into_iter().next())
            .ok_or_else(|| {
                crate::state::StateError::Corrupt(format!(
                    "cursor of link {}: {position}",
                    link.name
                ))
            })?;
        let value = window_start(&position, cursor.lookback).map_err(|m| {
            Error::NotFound(format!(
                "link `{}`, {side} cursor `{}`: {m}",
                link.name, cursor.column
            ))
        })?;
        since[i] = Some(crate::connectors::Since {
            column: cursor.column.clone(),
            value,
        });
    }
    Ok(Reading::Changed {
        since,
        keys: [None, None],
    })
}

/// The further of a stored position and a value seen: a cursor never moves backward.
pub(crate) fn furthest(stored: Option<&str>, seen: Option<&crate::model::Value>) -> Option<String> {
    let stored_value = stored
        .and_then(|s| crate::model::Key::decode(s).ok())
        .and_then(|k| k.0.into_iter().next());
    match (stored_value, seen) {
        (Some(old), Some(new)) if new.cursor_cmp(&old).is_some_and(|o| o.is_gt()) => {
            Some(crate::model::Key(vec![new.clone()]).encode())
        }
        (None, Some(new)) => Some(crate::model::Key(vec![new.clone()]).encode()),
        _ => stored.map(str::to_string),
    }
}

/// What a cycle's reads saw that the next cycle starts from.
pub(crate) struct Seen {
    /// Per side, the furthest cursor value read.
    pub cursor: [Option<Value>; 2],
    /// Per side, the range bounds a full read noted (`None`: the side was not read).
    pub bounds: [Option<Vec<Key>>; 2],
    /// Per side, grown ranges and the keys to split them at.
    pub splits: [Vec<(usize, Vec<Key>)>; 2],
}

/// Whether this link keeps key ranges with digests.
fn tracks_ranges(link: &LinkSpec) -> bool {
    link.changes
        .as_ref()
        .is_some_and(|c| c.reconcile == Reconcile::Digests)
}

/// `Some(range_size)` when a full read should note key range bounds: digests are on and
/// a side has no ranges yet.
pub(crate) fn bounds_every(link: &LinkSpec, reads: Option<&LinkReads>) -> Option<u64> {
    let changes = link.changes.as_ref()?;
    let known = reads.is_some_and(|r| r.ranges.iter().all(Option::is_some));
    (changes.reconcile == Reconcile::Digests && !known).then_some(changes.range_size as u64)
}

fn decode_bounds(ranges: &Ranges) -> Result<Vec<Key>, Error> {
    ranges
        .bounds
        .iter()
        .map(|b| {
            Key::decode(b).map_err(|e| StateError::Corrupt(format!("a range bound: {e}")).into())
        })
        .collect()
}

/// Each side's digests over its stored ranges, when this cycle reconciles by digests
/// (or reads in full on a link that keeps them). A `Digests` reading learns which ranges
/// changed; a kind that cannot compute digests turns it into a full read.
pub(crate) fn pre_digests(
    link: &LinkSpec,
    reads: Option<&LinkReads>,
    io: &mut LinkIo,
    reading: &mut Reading,
) -> Result<Option<[Vec<RangeDigest>; 2]>, Error> {
    if !tracks_ranges(link) || matches!(reading, Reading::Changed { .. }) {
        return Ok(None);
    }
    let Some([Some(left_ranges), Some(right_ranges)]) = reads.map(|r| &r.ranges) else {
        return Ok(None);
    };
    // Both systems compute their digests at once: the wait is the slower one's.
    let (left_bounds, right_bounds) = (decode_bounds(left_ranges)?, decode_bounds(right_ranges)?);
    let LinkIo {
        left,
        right,
        layout,
    } = io;
    let (left_spec, right_spec) = (&layout.left, &layout.right);
    let (left_digests, right_digests) = std::thread::scope(|scope| {
        let other = scope.spawn(|| right.digests(right_spec, &right_bounds));
        let this = left.digests(left_spec, &left_bounds);
        (this, other.join().expect("a digest thread does not panic"))
    });
    let mut current = [Vec::new(), Vec::new()];
    for (side, result) in [(Side::Left, left_digests), (Side::Right, right_digests)] {
        match result {
            Ok(d) => current[side as usize] = d,
            Err(ConnectorError::Unsupported(what)) => {
                *reading = Reading::Full(format!("the {side} system has no {what}"));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Reading::Digests { changed, .. } = reading {
        let sides = [
            (Side::Left, left_ranges, &left_bounds),
            (Side::Right, right_ranges, &right_bounds),
        ];
        for (side, ranges, bounds) in sides {
            let i = side as usize;
            for (r, digest) in current[i].iter().enumerate() {
                if ranges.digests.get(r) != Some(digest) {
                    changed[i].push((
                        r,
                        KeyRange {
                            from: r.checked_sub(1).map(|b| bounds[b].clone()),
                            to: bounds.get(r).cloned(),
                        },
                    ));
                }
            }
        }
    }
    Ok(Some(current))
}

/// Key ranges are kept only for keys whose stored form sorts as the systems sort them:
/// integers and uuids (text sorts by a collation the store does not know).
fn rangeable(key: &Key) -> bool {
    key.0
        .iter()
        .all(|v| matches!(v, Value::Integer(_) | Value::Uuid(_)))
}

/// The reads to keep after a cycle in which `stale` writes were found stale (their
/// record changed on the receiving side between the read and the write): each side's
/// cursor stays where it was before the cycle, so the next cycle reads those records
/// again and decides them anew, as a full read would. Advanced past them, a cursor
/// left them for the next reconciliation (a one-way link's owner value stayed
/// overwritten until then). Reading the rest of the cycle again is harmless: what was
/// written now equals the base. A position of another column is not kept (`None`: the
/// side is read in full next).
///
/// Kept once, not twice in a row: a record edited on the receiving side every time it
/// is written (a busy row) would otherwise hold the cursors for good, each cycle
/// reading everything since. Stale again, it waits for the next reconciliation.
pub(crate) fn held_if_stale(
    mut after: LinkReads,
    before: Option<&LinkReads>,
    stale: u64,
) -> LinkReads {
    if stale == 0 || before.is_some_and(|b| b.held) {
        return after;
    }
    after.held = true;
    after.cursor = [0, 1].map(|i| kept_position(before, &after.cursor_columns, i));
    after
}

/// Side `i`'s cursor position before the cycle, if it is of the column the side reads
/// by now: one kept for another column (the config changed) is dropped.
fn kept_position(
    before: Option<&LinkReads>,
    columns: &[Option<String>; 2],
    i: usize,
) -> Option<String> {
    before
        .filter(|b| b.cursor_columns[i] == columns[i])
        .and_then(|b| b.cursor[i].clone())
}

/// What the link's reads leave for the next cycle: cursors moved forward by what a read
/// by cursor or in full saw, and, where digests are on, each side's ranges with the
/// digests taken before reading. A range this run wrote into therefore differs next time
/// and is read once more: a digest of syncline's own writes is never trusted.
pub(crate) fn after(
    link: &LinkSpec,
    before: Option<LinkReads>,
    reading: &Reading,
    seen: &Seen,
    pre: Option<[Vec<RangeDigest>; 2]>,
) -> Option<LinkReads> {
    let Seen {
        cursor: cursor_seen,
        bounds: bounds_seen,
        splits,
    } = seen;
    let changes = link.changes.as_ref()?;
    let columns = [0, 1].map(|i| changes.cursor[i].as_ref().map(|c| c.column.clone()));
    let kept = |i: usize| kept_position(before.as_ref(), &columns, i);
    let cursor = match reading {
        Reading::Digests { .. } => [kept(0), kept(1)],
        _ => [0, 1].map(|i| furthest(kept(i).as_deref(), cursor_seen[i].as_ref())),
    };
    let before = before.unwrap_or_default();
    let since_full = match reading {
        Reading::Changed { .. } => before.since_full + 1,
        _ => 0,
    };
    let mut no_ranges = None;
    let ranges = if changes.reconcile == Reconcile::Digests {
        [0, 1].map(|i| {
            let mut ranges = match (&before.ranges[i], &pre) {
                (Some(known), Some(pre)) => Ranges {
                    bounds: known.bounds.clone(),
                    digests: pre[i].clone(),
                },
                (Some(known), None) => Ranges {
                    bounds: known.bounds.clone(),
                    digests: vec![Ranges::unknown(); known.bounds.len() + 1],
                },
                (None, _) => {
                    let seen = bounds_seen[i].as_ref()?;
                    if !seen.iter().all(rangeable) {
                        no_ranges = Some(format!(
                            "the {} side's keys are not integers or uuids, so it has no key ranges for digests",
                            if i == 0 { "left" } else { "right" }
                        ));
                        return None;
                    }
                    Ranges {
                        bounds: seen.iter().map(Key::encode).collect(),
                        digests: vec![Ranges::unknown(); seen.len() + 1],
                    }
                }
            };
            // A range that grew past twice the size is split where its re-read saw every
            // range_size-th key; the new ranges' digests are learned next time.
            for (range, keys) in splits[i].iter().rev() {
                if keys.is_empty() || !keys.iter().all(rangeable) || *range > ranges.bounds.len() {
                    continue;
                }
                let encoded: Vec<String> = keys.iter().map(Key::encode).collect();
                ranges.bounds.splice(*range..*range, encoded);
                ranges.digests.splice(
                    *range..=*range,
                    std::iter::repeat_n(Ranges::unknown(), keys.len() + 1),
                );
            }
            Some(ranges)
        })
    } else {
        [None, None]
    };
    Some(LinkReads {
        cursor,
        cursor_columns: columns,
        since_full,
        clean: true,
        ranges,
        no_ranges,
        fields: Some(fields_fingerprint(link)),
        held: false,
    })
}

/// What a record read unchanged would be synced as: the link's collections and keys,
/// mode, fields (columns, transforms, meanings) and units (owners, policies). Spans in
/// the config file are left out: moving a line changes nothing that is synced.
pub(crate) fn fields_fingerprint(link: &LinkSpec) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "{}.{}{:?}|{}.{}{:?}|{:?}|{:?}|{:?}|{:?}",
        link.left.system,
        link.left.collection,
        link.left.key,
        link.right.system,
        link.right.collection,
        link.right.key,
        link.mode,
        link.left_ref,
        link.right_ref,
        link.match_on,
    );
    for f in &link.fields {
        let _ = write!(
            text,
            "|{}>{}:{:?}:{:?}:{}",
            f.name, f.right, f.transform, f.meaning, f.composed
        );
    }
    for u in &link.units {
        let _ = write!(
            text,
            "|{}{:?}:{:?}:{:?}:{:?}",
            u.name, u.fields, u.owner, u.policy, u.clock
        );
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Where a cursor read of a side starts: its position, less the look-back window.
///
/// # Errors
/// The position cannot be moved back by that kind of window (text that is not a
/// timestamp, under a duration).
pub(crate) fn window_start(
    position: &crate::model::Value,
    lookback: crate::config::Lookback,
) -> Result<crate::model::Value, String> {
    use crate::config::Lookback;
    use crate::model::Value;
    use chrono::{NaiveDateTime, TimeDelta};
    let millis = |s: f64| TimeDelta::milliseconds((s * 1000.0).ceil() as i64);
    Ok(match (position, lookback) {
        (Value::Integer(n), Lookback::Steps(k)) => Value::Integer(n.saturating_sub(k)),
        // An integer under a duration counts seconds (a Unix time).
        (Value::Integer(n), Lookback::Seconds(s)) => {
            Value::Integer(n.saturating_sub(s.ceil() as i64))
        }
        (Value::Timestamp(t), Lookback::Seconds(s)) => Value::Timestamp(*t - millis(s)),
        (Value::TimestampTz(t), Lookback::Seconds(s)) => Value::TimestampTz(*t - millis(s)),
        (Value::Date(d), Lookback::Seconds(s)) => {
            Value::Date(*d - TimeDelta::days((s / 86400.0).ceil() as i64))
        }
        (Value::Text(t), Lookback::Seconds(s)) => {
            // Timestamps kept as text (SQLite's usual way) move back in their own form,
            // so the comparison stays one of text with text.
            const FORMS: &[&str] = &[
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.fZ",
                // PocketBase's.
                "%Y-%m-%d %H:%M:%S%.fZ",
            ];
            let found = FORMS.iter().find_map(|form| {
                NaiveDateTime::parse_from_str(t, form)
                    .ok()
                    .map(|at| (form, at))
            });
            match found {
                Some((form, at)) => Value::Text((at - millis(s)).format(form).to_string()),
                None => match chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                    Ok(d) => Value::Text(
                        (d - TimeDelta::days((s / 86400.0).ceil() as i64))
                            .format("%Y-%m-%d")
                            .to_string(),
                    ),
                    Err(_) => {
                        return Err(format!(
                            "cursor value {t:?} is not a timestamp, so a lookback duration cannot apply; give a count (`lookback = 0`)"
                        ));
                    }
                },
            }
        }
        (other, Lookback::Steps(0)) => other.clone(),
        (other, Lookback::Steps(_)) => {
            return Err(format!(
                "cursor value {other} is not a counter, so a lookback count cannot apply; give a duration (`lookback = \"5s\"`)"
            ));
        }
        (other, Lookback::Seconds(_)) => {
            return Err(format!(
                "cursor value {other} is not a timestamp, date or number, so a lookback duration cannot apply"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::window_start;
    use crate::config::Lookback;
    use crate::model::Value;

    #[test]
    fn a_window_starts_behind_the_position_in_the_positions_own_form() {
        let secs = Lookback::Seconds(5.0);
        assert_eq!(
            window_start(&Value::Integer(100), Lookback::Steps(10)),
            Ok(Value::Integer(90))
        );
        assert_eq!(
            window_start(&Value::Text("2026-01-02 10:00:03".into()), secs),
            Ok(Value::Text("2026-01-02 09:59:58".into()))
        );
        assert_eq!(
            window_start(&Value::Text("2026-01-02T10:00:03.5Z".into()), secs),
            Ok(Value::Text("2026-01-02T09:59:58.500Z".into()))
        );
        let at = chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
            .unwrap()
            .and_hms_opt(0, 0, 1)
            .unwrap();
        assert_eq!(
            window_start(&Value::Timestamp(at), secs),
            Ok(Value::Timestamp(at - chrono::TimeDelta::seconds(5)))
        );
        // PocketBase's form.
        assert_eq!(
            window_start(&Value::Text("2026-11-29 11:35:24.102Z".into()), secs),
            Ok(Value::Text("2026-11-29 11:35:19.102Z".into()))
        );
        assert!(window_start(&Value::Text("abc".into()), secs).is_err());
    }
}
