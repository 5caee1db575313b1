//! A cycle that reads what changed (`[links.NAME.changes]`): each side's records at or
//! past its cursor, less the look-back window, merged with their partners fetched by
//! key. Unchanged records are not read; what did change is decided exactly as in a full
//! read (three-way, against the base), so re-reading a record is harmless. Deletes are
//! not seen here, only by the full reads that every `full_every`-th cycle makes.

use super::{Planner, side_index};
use crate::Error;
use crate::connectors::{Connector, Since};
use crate::engine::read_ahead::{scan_ahead, sort_out_fetched};
use crate::model::{Key, Record, Side};
use crate::state::StateError;
use std::collections::HashSet;

/// How a cycle that reads what changed ended its planning.
pub(crate) enum ChangedRead {
    Planned,
    /// A record no pair holds could be the partner of one this read did not see (it
    /// pairs by `match_on`, an external id or a carried key): only a full read can
    /// tell, so this cycle reads in full instead. Says why.
    NeedsFullRead(String),
}

impl Planner<'_> {
    /// Plans from the records at or past `since` on each side. A side without a cursor
    /// (`None`) is not read: only the partners of the other side's changes are fetched
    /// from it, and its own edits wait for the next full read.
    pub(crate) fn plan_changed(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        since: [Option<Since>; 2],
    ) -> Result<ChangedRead, Error> {
        let [left_since, right_since] = since;
        if let Some(left_since) = left_since {
            let mut left_spec = self.layout.left.clone();
            left_spec.since = Some(left_since);
            self.report.left_records = self.read_left(left, right, &left_spec)?;
        }
        if let Some(right_since) = right_since {
            let mut right_spec = self.layout.right.clone();
            right_spec.since = Some(right_since);
            let batch = self.link.batch_size;
            self.report.right_records =
                scan_ahead(right, &right_spec, batch, &mut |records, bad| {
                    self.observe(Side::Right, &records);
                    self.in_transaction(|p| {
                        p.keep_out(Side::Right, bad)?;
                        p.right_changed(records, &mut *left)
                    })
                })?;
        }
        let pairs_by_identity = !self.link.match_on.is_empty()
            || self.link.left_ref.is_some()
            || self.link.right_ref.is_some()
            || self.layout.key_carried;
        if self.unlinked_staged > 0 && pairs_by_identity {
            return Ok(ChangedRead::NeedsFullRead(format!(
                "{} new or unpaired record(s) may pair with one that did not change",
                self.unlinked_staged
            )));
        }
        self.in_transaction(|p| p.match_and_create())?;
        Ok(ChangedRead::Planned)
    }

    /// A batch of changed right records: the pairs the left read did not already merge
    /// are merged with their left record, fetched by key (found gone: deleted there).
    fn right_changed(
        &mut self,
        records: Vec<Record>,
        left: &mut dyn Connector,
    ) -> Result<(), Error> {
        let keys: Vec<String> = records.iter().map(|r| r.key.encode()).collect();
        let links = self.state.right_links(&self.link.name, &keys)?;
        let mut unlinked = Vec::new();
        let mut changed = Vec::new();
        for (rec, key) in records.into_iter().zip(keys) {
            match links.get(&key) {
                None => unlinked.push(self.unlinked(Side::Right, rec)),
                Some(link) if link.tombstoned || link.left_seen => {}
                Some(_) => changed.push((rec, key)),
            }
        }
        let changed_keys: Vec<String> = changed.iter().map(|(_, k)| k.clone()).collect();
        let mut pairs = self
            .state
            .pairs_by(&self.link.name, Side::Right, &changed_keys)?;
        let left_keys = pairs
            .values()
            .map(|p| Key::decode(&p.left_key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Corrupt(e.to_string()))?;
        let fetched = if left_keys.is_empty() {
            Vec::new()
        } else {
            left.fetch(&self.layout.left, &left_keys)?
        };
        let (partners, bad) = sort_out_fetched(fetched);
        let left_alone: HashSet<String> = bad.iter().map(|b| b.key.encode()).collect();
        self.keep_out(Side::Left, bad)?;
        for (rec, key) in changed {
            let Some(pair) = pairs.remove(&key) else {
                continue;
            };
            if left_alone.contains(&pair.left_key) {
                continue;
            }
            match partners.get(&pair.left_key) {
                Some(partner) => self.plan_pair(partner, &rec, Some(pair), None)?,
                None => self.plan_deleted(Side::Left, &rec, pair)?,
            }
        }
        self.unlinked_staged += unlinked.len() as u64;
        Ok(self.state.stage_unlinked(Side::Right, &unlinked)?)
    }

    /// The furthest cursor value each side's read saw.
    pub(crate) fn cursor_seen(&self, side: Side) -> Option<&crate::model::Value> {
        self.cursor_seen[side_index(side)].as_ref()
    }
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
        assert!(window_start(&Value::Text("abc".into()), secs).is_err());
    }
}
