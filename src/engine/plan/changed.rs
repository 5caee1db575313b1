//! A cycle that reads what changed (`[links.NAME.changes]`): each side's records at or
//! past its cursor, less the look-back window, merged with their partners fetched by
//! key. Unchanged records are not read; what did change is decided exactly as in a full
//! read (three-way, against the base), so re-reading a record is harmless. A cursor read
//! does not see deletes (the reconciliations do); a change feed's keys and a digest's
//! ranges do.

use super::{Planner, side_index};
use crate::Error;
use crate::connectors::{Connector, KeyRange, Since};
use crate::engine::read_ahead::{scan_ahead, sort_out_fetched};
use crate::model::{Key, Record, Side};
use crate::state::StateError;
use std::collections::HashSet;

/// A run's id, and what to call before its first write: a left cursor read given one
/// writes as it reads (see `streamed`).
pub(crate) type Stream<'h> = (i64, &'h mut dyn FnMut(&str));

/// How a cycle that reads what changed ended its planning.
pub(crate) enum ChangedRead {
    Planned,
    /// A record no pair holds could be the partner of one this read did not see (it
    /// pairs by `match_on`, an external id or a carried key): only a full read can
    /// tell, so this cycle reads in full instead. Says why.
    NeedsFullRead(String),
}

/// Unpaired records a cycle that reads what changed checks one by one (their carried
/// key's partner, fetched); past this many it reads in full instead.
pub(super) const UNLINKED_KEYS: usize = 10_000;

impl Planner<'_> {
    /// Counts records staged with no pair; in a cycle that reads what changed, notes
    /// their keys too (see [`UNLINKED_KEYS`]).
    pub(super) fn note_unlinked(&mut self, side: Side, unlinked: &[crate::state::Unlinked]) {
        self.unlinked_staged += unlinked.len() as u64;
        if let Some(keys) = &mut self.unlinked_keys {
            if keys[0].len() + keys[1].len() + unlinked.len() > UNLINKED_KEYS {
                self.unlinked_keys = None;
            } else {
                keys[side_index(side)].extend(unlinked.iter().map(|u| u.key.clone()));
            }
        }
    }

    /// Whether no record a partial read found unpaired can pair with one it did not
    /// read. Only a carried key answers that by a fetch: the partner of a new record is
    /// the other side's record under the same key. `match_on` and external ids would
    /// need a search of the other side, which is a full read.
    fn unpaired_stand_alone(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<bool, Error> {
        let only_carried = self.layout.key_carried
            && self.link.match_on.is_empty()
            && self.link.left_ref.is_none()
            && self.link.right_ref.is_none();
        let Some(keys) = self.unlinked_keys.take().filter(|_| only_carried) else {
            return Ok(false);
        };
        for (side, keys) in [(Side::Left, &keys[0]), (Side::Right, &keys[1])] {
            for chunk in keys.chunks(self.link.batch_size.max(1)) {
                if !self
                    .fetch_from(side.other(), left, right, chunk)?
                    .is_empty()
                {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Plans from the records at or past `since` on each side. A side without a cursor
    /// (`None`) is not read: only the partners of the other side's changes are fetched
    /// from it, and its own edits wait for the next full read.
    ///
    /// `stream`, in a run: its id, and what to call before the first write. The left
    /// cursor read then writes what it can while it reads (see `streamed`).
    pub(crate) fn plan_changed(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        since: [Option<Since>; 2],
        keys: [Option<Vec<Key>>; 2],
        stream: Option<Stream<'_>>,
    ) -> Result<ChangedRead, Error> {
        let [left_since, right_since] = since;
        let [left_keys, right_keys] = keys;
        self.unlinked_keys = Some([Vec::new(), Vec::new()]);
        if let Some(keys) = left_keys {
            self.plan_keys(Side::Left, &keys, left, right)?;
        }
        if let Some(keys) = right_keys {
            self.plan_keys(Side::Right, &keys, left, right)?;
        }
        if let Some(left_since) = left_since {
            let mut left_spec = self.layout.left.clone();
            left_spec.since = Some(left_since);
            self.report.left_records = match stream {
                Some((run, hook)) if self.verify.is_none() => {
                    // Not while the right is read too: its pass leaves alone what the
                    // left's merged, which must then have merged the right as it is.
                    let assume = right_since.is_none() && self.may_assume_partners(right);
                    let read =
                        self.read_left_streamed(left, right, &left_spec, run, hook, assume)?;
                    // Writes whose assumed partner turned out otherwise: both records
                    // fetched as they are now and decided again, staged as the rest.
                    let again = std::mem::take(&mut self.report.decide_again);
                    self.plan_keys(Side::Left, &again, left, right)?;
                    read
                }
                _ => self.read_left(left, right, &left_spec)?,
            };
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
        self.finish_changed(left, right)
    }

    /// Plans from the records a change feed says changed on `side`: fetched as they are
    /// now and merged as in a cursor read; those the fetch no longer finds are deletes.
    fn plan_keys(
        &mut self,
        side: Side,
        keys: &[Key],
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<(), Error> {
        for chunk in keys.chunks(self.link.batch_size.max(1)) {
            let fetched = self.fetch_from(side, left, right, chunk)?;
            let (found, bad) = sort_out_fetched(fetched);
            let bad_keys: HashSet<String> = bad.iter().map(|b| b.key.encode()).collect();
            let gone: Vec<String> = chunk
                .iter()
                .map(Key::encode)
                .filter(|k| !found.contains_key(k) && !bad_keys.contains(k))
                .collect();
            let mut records: Vec<Record> = found.into_values().collect();
            records.sort_by_cached_key(|r| r.key.encode());
            self.observe(side, &records);
            *match side {
                Side::Left => &mut self.report.left_records,
                Side::Right => &mut self.report.right_records,
            } += records.len() as u64;
            match side {
                Side::Left => {
                    let (looked_up, partner_keys) = self.in_transaction(|p| {
                        p.keep_out(Side::Left, bad)?;
                        p.left_lookup(records)
                    })?;
                    let partners = right.fetch(&self.layout.right, &partner_keys)?;
                    self.in_transaction(|p| p.left_merge(looked_up, partners))?;
                }
                Side::Right => self.in_transaction(|p| {
                    p.keep_out(Side::Right, bad)?;
                    p.right_changed(records, &mut *left)
                })?,
            }
            // Already fetched and not found: no second fetch to confirm it.
            self.in_transaction(|p| p.plan_gone(side, &gone, left, right))?;
        }
        Ok(())
    }

    /// Matches and creates what a partial read staged, unless a record it found with no
    /// pair could pair with one it did not read.
    fn finish_changed(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<ChangedRead, Error> {
        let pairs_by_identity = !self.link.match_on.is_empty()
            || self.link.left_ref.is_some()
            || self.link.right_ref.is_some()
            || self.layout.key_carried;
        if self.unlinked_staged > 0
            && pairs_by_identity
            && !self.unpaired_stand_alone(left, right)?
        {
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
        let linked: Vec<String> = links.keys().cloned().collect();
        self.state.mark_seen(Side::Right, &linked)?;
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
        self.note_unlinked(Side::Right, &unlinked);
        Ok(self.state.stage_unlinked(Side::Right, &unlinked)?)
    }

    /// Plans from the key ranges whose digests changed (`changed`, per side): the records
    /// in them, merged as in a cursor read, and the pairs whose record in a range is
    /// gone, confirmed by a fetch.
    pub(crate) fn plan_ranges(
        &mut self,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        changed: &[Vec<(usize, KeyRange)>; 2],
        range_size: u64,
    ) -> Result<ChangedRead, Error> {
        // Each range re-read notes every range_size-th key, to split it if it grew.
        self.bounds_every = Some(range_size);
        self.unlinked_keys = Some([Vec::new(), Vec::new()]);
        for (index, range) in &changed[0] {
            self.bounds_count[0] = 0;
            let mut spec = self.layout.left.clone();
            spec.range = Some(range.clone());
            self.report.left_records += self.read_left(left, right, &spec)?;
            self.note_split(Side::Left, *index, range_size);
        }
        for (index, range) in &changed[1] {
            self.bounds_count[1] = 0;
            let mut spec = self.layout.right.clone();
            spec.range = Some(range.clone());
            let batch = self.link.batch_size;
            self.report.right_records += scan_ahead(right, &spec, batch, &mut |records, bad| {
                self.observe(Side::Right, &records);
                self.in_transaction(|p| {
                    p.keep_out(Side::Right, bad)?;
                    p.right_changed(records, &mut *left)
                })
            })?;
            self.note_split(Side::Right, *index, range_size);
        }
        self.bounds_every = None;
        for (side, ranges) in [(Side::Left, &changed[0]), (Side::Right, &changed[1])] {
            for (_, range) in ranges {
                self.in_transaction(|p| p.vanished_in_range(side, range, left, right))?;
            }
        }
        self.finish_changed(left, right)
    }

    /// A re-read range that held more than twice `range_size` records is to be split at
    /// the keys its read noted.
    fn note_split(&mut self, side: Side, index: usize, range_size: u64) {
        let i = side_index(side);
        let keys = std::mem::take(&mut self.bounds_seen[i]);
        if self.bounds_count[i] > 2 * range_size {
            self.splits[i].push((index, keys));
        }
    }

    /// The pairs whose `side` record lies in `range` and was not read there: gone, once
    /// a fetch confirms it (a listing in another order is not a delete).
    fn vanished_in_range(
        &mut self,
        side: Side,
        range: &KeyRange,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<(), Error> {
        let from = range.from.as_ref().map(Key::encode);
        let to = range.to.as_ref().map(Key::encode);
        let unseen = self.state.unseen_pairs_in_range(
            &self.link.name,
            side,
            from.as_deref(),
            to.as_deref(),
        )?;
        for chunk in unseen.chunks(self.link.batch_size.max(1)) {
            self.confirm_gone(side, chunk, left, right)?;
        }
        Ok(())
    }

    /// Of the pairs whose `side` record is one of `chunk` (encoded keys), those a fetch
    /// finds gone (see [`plan_gone`](Self::plan_gone)).
    fn confirm_gone(
        &mut self,
        side: Side,
        chunk: &[String],
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<(), Error> {
        let keys = chunk
            .iter()
            .map(|k| Key::decode(k).map_err(|e| StateError::Corrupt(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let still: HashSet<String> = self
            .fetch_from(side, left, right, &keys)?
            .iter()
            .map(|r| r.key.encode())
            .collect();
        let gone: Vec<String> = chunk
            .iter()
            .filter(|k| !still.contains(*k))
            .cloned()
            .collect();
        self.plan_gone(side, &gone, left, right)
    }

    /// The pairs whose `side` record is one of `gone` (encoded keys a fetch did not
    /// find): deleted on that side, per the delete rules, or forgotten when their
    /// partner is gone too.
    fn plan_gone(
        &mut self,
        side: Side,
        gone: &[String],
        left: &mut dyn Connector,
        right: &mut dyn Connector,
    ) -> Result<(), Error> {
        if gone.is_empty() {
            return Ok(());
        }
        let decode = |k: &str| Key::decode(k).map_err(|e| StateError::Corrupt(e.to_string()));
        let mut pairs = self.state.pairs_by(&self.link.name, side, gone)?;
        let gone: Vec<crate::state::PairRow> =
            gone.iter().filter_map(|k| pairs.remove(k)).collect();
        let partner_of = |p: &crate::state::PairRow| match side {
            Side::Left => p.right_key.clone(),
            Side::Right => p.left_key.clone(),
        };
        let partner_keys = gone
            .iter()
            .map(|p| decode(&partner_of(p)))
            .collect::<Result<Vec<_>, _>>()?;
        let (partners, bad) =
            sort_out_fetched(self.fetch_from(side.other(), left, right, &partner_keys)?);
        self.keep_out(side.other(), bad)?;
        for pair in gone {
            match partners.get(&partner_of(&pair)) {
                Some(partner) => self.plan_deleted(side, partner, pair)?,
                None => self.forget_pair(decode(&pair.left_key)?)?,
            }
        }
        Ok(())
    }

    /// Records of `side` by key, from whichever of the two connectors is that side.
    fn fetch_from(
        &self,
        side: Side,
        left: &mut dyn Connector,
        right: &mut dyn Connector,
        keys: &[Key],
    ) -> Result<Vec<Record>, Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let spec = self.layout.read_spec(side);
        Ok(match side {
            Side::Left => left.fetch(spec, keys)?,
            Side::Right => right.fetch(spec, keys)?,
        })
    }

    /// The furthest cursor value each side's read saw.
    pub(crate) fn cursor_seen(&self, side: Side) -> Option<&crate::model::Value> {
        self.cursor_seen[side_index(side)].as_ref()
    }
}
