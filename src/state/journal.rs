//! The journal: every planned and applied write, its reason and its outcome.

use super::*;

/// A journal row.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub id: i64,
    pub run: i64,
    pub at: String,
    pub link: String,
    pub left_key: Option<String>,
    pub right_key: Option<String>,
    pub side: String,
    pub op: String,
    pub field: Option<String>,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
    pub reason: String,
    pub status: String,
    /// For an entry that stands for many records' same change (a batch's creates), how
    /// many; their keys are listed only when the journal is filtered by one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<i64>,
}

/// Where a journaled batch's entries are: ids in `(after, upto]` of `run`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JournalRange {
    pub run: i64,
    pub after: i64,
    pub upto: i64,
}

/// A change to journal, before it has an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub side: Side,
    /// Fixed words and, mostly, fixed reasons: borrowed, not allocated per record.
    pub op: Cow<'static, str>,
    pub field: Option<String>,
    pub old: Option<Value>,
    pub new: Option<Value>,
    pub reason: Cow<'static, str>,
}

/// `OR id IN (…)` for journal entries found otherwise (ids are numbers: nothing from a
/// user reaches the SQL), or nothing for none.
fn entry_ids_clause<'i>(ids: impl Iterator<Item = &'i i64>) -> String {
    let listed: Vec<String> = ids.map(i64::to_string).collect();
    if listed.is_empty() {
        String::new()
    } else {
        format!("OR id IN ({})", listed.join(", "))
    }
}

/// One row of `journal_member_chunks`: some of a grouped entry's records, by key.
struct MemberChunk {
    entry: i64,
    first_key: String,
    keys: Vec<String>,
}

/// Whether a change can share one journal entry with the batch's others like it, and
/// the key it is listed under: a create (no field values), journaled under the one key
/// its pair has so far. Its other key is found through the id map, as for any create.
fn group_of<'k>(
    left_key: Option<&'k str>,
    right_key: Option<&'k str>,
    change: &Change,
) -> Option<(Side, &'k str)> {
    if change.op != "create"
        || change.field.is_some()
        || change.old.is_some()
        || change.new.is_some()
    {
        return None;
    }
    sole_key(left_key, right_key)
}

/// The one key an entry has so far, and its side; `None` with both or neither.
fn sole_key<'k>(left_key: Option<&'k str>, right_key: Option<&'k str>) -> Option<(Side, &'k str)> {
    match (left_key, right_key) {
        (Some(k), None) => Some((Side::Left, k)),
        (None, Some(k)) => Some((Side::Right, k)),
        _ => None,
    }
}

impl StateStore {
    // ---- journal -------------------------------------------------------------------

    /// Journals a batch's changes as `planned`, many rows per statement. Creates that
    /// share everything but their record are one entry (see [`group_of`]). Returns where
    /// the entries are, so outcomes are set with [`journal_outcome`](Self::journal_outcome)
    /// and [`journal_applied_within`](Self::journal_applied_within) without reading ids back.
    pub(crate) fn journal_planned_batch(
        &mut self,
        run: i64,
        link: &str,
        entries: &[(Option<&str>, Option<&str>, &Change)],
    ) -> Result<JournalRange> {
        let after = self
            .db
            .query_opt("SELECT COALESCE(MAX(id), 0) FROM journal", &[])?
            .map_or(Ok(0), |r| r.int(0))?;
        let at = now();
        let mut singles = Vec::new();
        let mut groups: Vec<(Side, &Change, Vec<&str>)> = Vec::new();
        for &(left_key, right_key, change) in entries {
            let Some((key_side, key)) = group_of(left_key, right_key, change) else {
                singles.push((left_key, right_key, change));
                continue;
            };
            let same = |(s, c, _): &&mut (Side, &Change, Vec<&str>)| {
                *s == key_side && c.side == change.side && c.reason == change.reason
            };
            match groups.iter_mut().find(same) {
                Some((_, _, keys)) => keys.push(key),
                None => groups.push((key_side, change, vec![key])),
            }
        }
        for (key_side, change, keys) in &groups {
            if let [key] = keys.as_slice() {
                let (left_key, right_key) = match key_side {
                    Side::Left => (Some(*key), None),
                    Side::Right => (None, Some(*key)),
                };
                singles.push((left_key, right_key, change));
            } else {
                self.journal_group(run, link, &at, *key_side, change, keys)?;
            }
        }
        self.journal_rows(run, link, &at, &singles, "planned")?;
        let upto = self
            .db
            .query_opt("SELECT COALESCE(MAX(id), 0) FROM journal", &[])?
            .map_or(Ok(0), |r| r.int(0))?;
        Ok(JournalRange { run, after, upto })
    }

    /// One `planned` entry for the same change to many records, and its members.
    fn journal_group(
        &mut self,
        run: i64,
        link: &str,
        at: &str,
        key_side: Side,
        change: &Change,
        keys: &[&str],
    ) -> Result<()> {
        let entry = self
            .db
            .query_opt(
                "INSERT INTO journal (run, at, link, side, op, reason, status, records)
                 VALUES ($1, $2, $3, $4, $5, $6, 'planned', $7) RETURNING id",
                &[
                    P::Int(run),
                    P::Text(at),
                    P::Text(link),
                    P::Text(change.side.as_str()),
                    P::Text(&change.op),
                    P::Text(&change.reason),
                    P::Int(keys.len() as i64),
                ],
            )?
            .ok_or_else(|| StateError::Corrupt("a journal insert returned no id".into()))?
            .int(0)?;
        for chunk in keys.chunks(MEMBER_CHUNK) {
            self.put_member_chunk(link, key_side, entry, chunk)?;
        }
        Ok(())
    }

    /// Lists `keys` (not empty) as members of grouped entry `entry`, one row.
    fn put_member_chunk(
        &mut self,
        link: &str,
        key_side: Side,
        entry: i64,
        keys: &[&str],
    ) -> Result<()> {
        let first = keys.iter().min().copied().unwrap_or_default();
        let last = keys.iter().max().copied().unwrap_or_default();
        let listed = serde_json::to_string(keys).expect("keys serialize");
        self.db.execute(
            "INSERT INTO journal_member_chunks (link, key_side, first_key, entry, last_key, keys)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                P::Text(link),
                P::Text(key_side.as_str()),
                P::Text(first),
                P::Int(entry),
                P::Text(last),
                P::Text(&listed),
            ],
        )?;
        Ok(())
    }

    /// The member chunks of `link`'s grouped entries that list `key` on `key_side`; with
    /// `planned`, only those of entries within that id range, of that side, still
    /// `planned`.
    fn chunks_listing(
        &mut self,
        link: &str,
        key_side: Side,
        key: &str,
        planned: Option<(JournalRange, Side)>,
    ) -> Result<Vec<MemberChunk>> {
        const CHUNKS: &str = "SELECT entry, first_key, keys FROM journal_member_chunks
              WHERE link = $1 AND key_side = $2 AND first_key <= $3 AND last_key >= $3";
        let base = [P::Text(link), P::Text(key_side.as_str()), P::Text(key)];
        let rows = match planned {
            None => self.db.query(CHUNKS, &base)?,
            Some((at, side)) => self.db.query(
                &format!(
                    "{CHUNKS} AND entry IN (SELECT id FROM journal
                       WHERE id > $4 AND id <= $5 AND side = $6 AND status = 'planned')"
                ),
                &[
                    base[0],
                    base[1],
                    base[2],
                    P::Int(at.after),
                    P::Int(at.upto),
                    P::Text(side.as_str()),
                ],
            )?,
        };
        let mut found = Vec::new();
        for r in rows {
            let listed = r.text(2)?;
            let keys: Vec<String> = serde_json::from_str(&listed)
                .map_err(|e| StateError::Corrupt(format!("journal member chunk: {e}: {listed}")))?;
            if keys.iter().any(|k| k == key) {
                found.push(MemberChunk {
                    entry: r.int(0)?,
                    first_key: r.text(1)?,
                    keys,
                });
            }
        }
        Ok(found)
    }

    /// The grouped entries that hold the record with encoded key `key` — a left or a
    /// right key, the other found through the id map — each with the side and key it is
    /// listed under (the left one when both are).
    fn grouped_entries_of(
        &mut self,
        link: Option<&str>,
        key: &str,
    ) -> Result<BTreeMap<i64, (Side, String)>> {
        let links: Vec<String> = match link {
            Some(l) => vec![l.to_string()],
            None => self
                .db
                .query("SELECT DISTINCT link FROM journal_member_chunks", &[])?
                .iter()
                .map(|r| r.text(0))
                .collect::<Result<_>>()?,
        };
        let mut found = BTreeMap::new();
        for link in &links {
            for side in [Side::Left, Side::Right] {
                let partner = self.db.query_opt(
                    &format!(
                        "SELECT {this}_key FROM pairs WHERE link = $1 AND {other}_key = $2",
                        this = side.as_str(),
                        other = side.other().as_str()
                    ),
                    &[P::Text(link), P::Text(key)],
                )?;
                let mut candidates = vec![key.to_string()];
                if let Some(p) = partner {
                    candidates.push(p.text(0)?);
                }
                for candidate in candidates {
                    for chunk in self.chunks_listing(link, side, &candidate, None)? {
                        found
                            .entry(chunk.entry)
                            .or_insert_with(|| (side, candidate.clone()));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Journals a person's decision (a conflict resolved, a record released) as a run of
    /// its own, `decided`, whose command names who made it. Call inside a transaction
    /// with the change the decision makes.
    pub fn journal_decision(
        &mut self,
        link: &str,
        left_key: Option<&str>,
        right_key: Option<&str>,
        change: &Change,
        who: &str,
    ) -> Result<()> {
        let at = now();
        let run = self
            .db
            .query_opt(
                "INSERT INTO runs (started_at, finished_at, command, status) VALUES ($1, $1, $2, 'done') RETURNING id",
                &[P::Text(&at), P::Text(&format!("{} by {who}", change.op))],
            )?
            .ok_or_else(|| StateError::Corrupt("no run id returned".into()))?
            .int(0)?;
        self.journal_rows(run, link, &at, &[(left_key, right_key, change)], "decided")
    }

    /// Journals changes with one status, one entry each, many rows per statement.
    pub(crate) fn journal_batch(
        &mut self,
        run: i64,
        link: &str,
        entries: &[(Option<&str>, Option<&str>, &Change)],
        status: &str,
    ) -> Result<()> {
        self.journal_rows(run, link, &now(), entries, status)
    }

    fn journal_rows(
        &mut self,
        run: i64,
        link: &str,
        at: &str,
        entries: &[(Option<&str>, Option<&str>, &Change)],
        status: &str,
    ) -> Result<()> {
        for chunk in entries.chunks(WRITE_CHUNK) {
            let values: Vec<(Option<String>, Option<String>)> = chunk
                .iter()
                .map(|(_, _, c)| {
                    (
                        c.old.as_ref().map(Value::encode),
                        c.new.as_ref().map(Value::encode),
                    )
                })
                .collect();
            let sql = self.multi_row_sql("journal", chunk.len(), |n| {
                format!(
                    "INSERT INTO journal (run, at, link, left_key, right_key, side, op, field, old, new, reason, status) VALUES {}",
                    row_tuples(n, "$1, $2, $3, ", 5, 8, ", $4")
                )
            });
            let mut params = vec![P::Int(run), P::Text(at), P::Text(link), P::Text(status)];
            for ((left_key, right_key, c), (old, new)) in chunk.iter().zip(&values) {
                params.extend([
                    P::OptText(*left_key),
                    P::OptText(*right_key),
                    P::Text(c.side.as_str()),
                    P::Text(&c.op),
                    P::OptText(c.field.as_deref()),
                    P::OptText(old.as_deref()),
                    P::OptText(new.as_deref()),
                    P::Text(&c.reason),
                ]);
            }
            self.db.execute(&sql, &params)?;
        }
        Ok(())
    }

    /// Sets the outcome (`stale`, `rejected`) of one pair's planned entries for one side,
    /// among the batch journaled at `at`. A record of a grouped entry leaves the group
    /// as an entry of its own, with its outcome.
    pub(crate) fn journal_outcome(
        &mut self,
        at: JournalRange,
        link: &str,
        side: Side,
        keys: (Option<&str>, Option<&str>),
        status: &str,
    ) -> Result<()> {
        let updated = self.db.execute(
            "UPDATE journal SET status = $1 WHERE id > $2 AND id <= $3 AND +run = $4 AND link = $5 AND side = $6
               AND left_key IS NOT DISTINCT FROM $7 AND right_key IS NOT DISTINCT FROM $8 AND status = 'planned'",
            &[
                P::Text(status),
                P::Int(at.after),
                P::Int(at.upto),
                P::Int(at.run),
                P::Text(link),
                P::Text(side.as_str()),
                P::OptText(keys.0),
                P::OptText(keys.1),
            ],
        )?;
        // Not among the batch's own entries: a member of its grouped creates, if any.
        let Some((key_side, key)) = sole_key(keys.0, keys.1).filter(|_| updated == 0) else {
            return Ok(());
        };
        // Its chunk among the batch's grouped entries of that side still planned.
        let Some(chunk) = self
            .chunks_listing(link, key_side, key, Some((at, side)))?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let entry = chunk.entry;
        self.db.execute(
            "INSERT INTO journal (run, at, link, left_key, right_key, side, op, field, old, new, reason, status)
             SELECT run, at, link, CAST($2 AS TEXT), CAST($3 AS TEXT), side, op, field, old, new, reason, CAST($4 AS TEXT)
               FROM journal WHERE id = $1",
            &[P::Int(entry), P::OptText(keys.0), P::OptText(keys.1), P::Text(status)],
        )?;
        self.db.execute(
            "UPDATE journal SET records = records - 1 WHERE id = $1",
            &[P::Int(entry)],
        )?;
        // The chunk lists the rest; gone when it was the last.
        self.db.execute(
            "DELETE FROM journal_member_chunks WHERE link = $1 AND key_side = $2 AND first_key = $3 AND entry = $4",
            &[
                P::Text(link),
                P::Text(key_side.as_str()),
                P::Text(&chunk.first_key),
                P::Int(entry),
            ],
        )?;
        let rest: Vec<&str> = chunk
            .keys
            .iter()
            .map(String::as_str)
            .filter(|k| *k != key)
            .collect();
        if !rest.is_empty() {
            self.put_member_chunk(link, key_side, entry, &rest)?;
        }
        Ok(())
    }

    /// Records that every still-`planned` entry of the batch journaled at `at` applied:
    /// one row for the batch, not one update per entry (readers resolve the status with
    /// [`schema::applied_by_batch`]). Bounded above as well as below: the next batch may
    /// already be journaled while this one commits.
    pub(crate) fn journal_applied_within(&mut self, at: JournalRange) -> Result<()> {
        if at.upto > at.after {
            self.db.execute(
                "INSERT INTO journal_applied (run, after_id, upto_id) VALUES ($1, $2, $3)",
                &[P::Int(at.run), P::Int(at.after), P::Int(at.upto)],
            )?;
        }
        Ok(())
    }

    /// The journal, newest first, filtered. With a key, a grouped entry that holds the
    /// record is listed with the record's key on its side.
    pub fn journal(
        &mut self,
        link: Option<&str>,
        key: Option<&str>,
        run: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JournalEntry>> {
        // Grouped entries holding the record are found in their member chunks first.
        let grouped = match key {
            Some(k) => self.grouped_entries_of(link, k)?,
            None => BTreeMap::new(),
        };
        let rows = self.db.query(
            &format!("SELECT id, run, at, link, left_key, right_key, side, op, field, old, new, reason,
                    CASE WHEN {applied} THEN 'applied' ELSE status END, records
               FROM journal
             WHERE (CAST($1 AS TEXT) IS NULL OR link = $1)
               AND (CAST($2 AS TEXT) IS NULL OR left_key = $2 OR right_key = $2
                    -- a create's journal row has only its source's key: the id map has the other
                    OR left_key IN (SELECT p.left_key FROM pairs p WHERE p.link = journal.link AND p.right_key = $2)
                    OR right_key IN (SELECT p.right_key FROM pairs p WHERE p.link = journal.link AND p.left_key = $2)
                    {member})
               AND (CAST($3 AS BIGINT) IS NULL OR run = $3)
             ORDER BY id DESC LIMIT $4",
                applied = schema::applied_by_batch("journal"),
                member = entry_ids_clause(grouped.keys())),
            &[P::OptText(link), P::OptText(key), P::OptInt(run), P::Int(limit)],
        )?;
        let dec = |s: Option<String>| s.and_then(|s| Value::decode(&s).ok()).map(|v| v.to_json());
        let key_text = |s: Option<String>| {
            s.and_then(|s| Key::decode(&s).ok())
                .map(|k| k.display_text())
        };
        rows.iter()
            .map(|r| {
                let id = r.int(0)?;
                let records = r.opt_int(13)?;
                let (mut left_key, mut right_key) = (r.opt_text(4)?, r.opt_text(5)?);
                match grouped.get(&id).filter(|_| records.is_some()) {
                    Some((Side::Left, k)) => left_key = Some(k.clone()),
                    Some((Side::Right, k)) => right_key = Some(k.clone()),
                    None => {}
                }
                Ok(JournalEntry {
                    id,
                    run: r.int(1)?,
                    at: r.text(2)?,
                    link: r.text(3)?,
                    left_key: key_text(left_key),
                    right_key: key_text(right_key),
                    side: r.text(6)?,
                    op: r.text(7)?,
                    field: r.opt_text(8)?,
                    old: dec(r.opt_text(9)?),
                    new: dec(r.opt_text(10)?),
                    reason: r.text(11)?,
                    status: r.text(12)?,
                    records,
                })
            })
            .collect()
    }

    /// The last applied journal entry touching a field of a pair: (run, at, reason, side).
    pub fn last_write(
        &mut self,
        link: &str,
        left_key: &str,
        field: &str,
    ) -> Result<Option<(i64, String, String, String)>> {
        let grouped = self.grouped_entries_of(Some(link), left_key)?;
        match self.db.query_opt(
            &format!("SELECT run, at, reason, side FROM journal WHERE link = $1
               AND (left_key = $2 OR right_key IN (SELECT p.right_key FROM pairs p WHERE p.link = $1 AND p.left_key = $2)
                    {})
               AND (field = $3 OR (field IS NULL AND op = 'create')) AND (status = 'applied' OR {})
             ORDER BY id DESC LIMIT 1", entry_ids_clause(grouped.keys()), schema::applied_by_batch("journal")),
            &[P::Text(link), P::Text(left_key), P::Text(field)],
        )? {
            Some(r) => Ok(Some((r.int(0)?, r.text(1)?, r.text(2)?, r.text(3)?))),
            None => Ok(None),
        }
    }
}
