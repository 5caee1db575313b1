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

/// One record of a grouped entry: its key and, for an update, the field's value before
/// and after (encoded), which the entry itself leaves out. Listed in a chunk's `keys` as
/// the key alone (a create) or `[key, old, new]` (an update).
#[derive(Debug, Clone, PartialEq)]
struct Member {
    key: String,
    values: Option<(Option<String>, Option<String>)>,
}

impl Member {
    fn to_json(&self) -> serde_json::Value {
        match &self.values {
            None => serde_json::Value::from(self.key.as_str()),
            Some((old, new)) => serde_json::json!([self.key, old, new]),
        }
    }

    fn from_json(v: serde_json::Value) -> Option<Member> {
        match v {
            serde_json::Value::String(key) => Some(Member { key, values: None }),
            serde_json::Value::Array(parts) => {
                let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
                let [key, old, new] = parts.as_slice() else {
                    return None;
                };
                Some(Member {
                    key: text(key)?,
                    values: Some((text(old), text(new))),
                })
            }
            _ => None,
        }
    }
}

/// One row of `journal_member_chunks`: some of a grouped entry's records, by key.
struct MemberChunk {
    entry: i64,
    first_key: String,
    members: Vec<Member>,
}

/// Whether a change can share one journal entry with the batch's others like it, and
/// the key it is listed under: a create (no field values), journaled under the one key
/// its pair has so far (its other key is found through the id map, as for any create);
/// or an update of a linked pair's field, listed under its left key with the field's
/// values (a cycle that updates ten thousand records then journals an entry per field
/// and batch, not ten thousand entries with an index row per key each).
fn group_of<'k>(
    left_key: Option<&'k str>,
    right_key: Option<&'k str>,
    change: &Change,
) -> Option<(Side, &'k str)> {
    match (&*change.op, &change.field, left_key, right_key) {
        ("create", None, _, _) if change.old.is_none() && change.new.is_none() => {
            sole_key(left_key, right_key)
        }
        ("update", Some(_), Some(left), Some(_)) => Some((Side::Left, left)),
        _ => None,
    }
}

/// The key a pair's record is listed under in a grouped entry: its left key when it has
/// both (an update), else the one it has (a create).
fn member_key<'k>(
    left_key: Option<&'k str>,
    right_key: Option<&'k str>,
) -> Option<(Side, &'k str)> {
    match (left_key, right_key) {
        (Some(left), Some(_)) => Some((Side::Left, left)),
        _ => sole_key(left_key, right_key),
    }
}

/// The one key an entry has so far, and its side; `None` with both or neither.
fn sole_key<'k>(left_key: Option<&'k str>, right_key: Option<&'k str>) -> Option<(Side, &'k str)> {
    match (left_key, right_key) {
        (Some(k), None) => Some((Side::Left, k)),
        (None, Some(k)) => Some((Side::Right, k)),
        _ => None,
    }
}

/// Buckets the members of grouped updates are listed in, per entry.
const UPDATE_BUCKETS: u64 = 256;

/// The bucket a grouped update lists `key` in. A batch's updates are spread over the
/// whole key range, so a chunk of them by key range would span nearly all of it, and
/// finding one record's entries (`log --key`, `explain`) would read every chunk the
/// journal ever wrote; by bucket, a 256th of them.
fn bucket(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % UPDATE_BUCKETS
}

/// The bucket of `key` as its chunks' `first_key` and `last_key`. `#` sorts before every
/// encoded key (each starts with its type's letter), so a bucket is never mistaken for
/// a key range.
pub(super) fn bucket_of(key: &str) -> String {
    format!("#{:03}", bucket(key))
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
        // Each group: its key side, its first change (the one the entry is written
        // from), and its members (the pair's keys and change each).
        type Grouped<'e> = (
            Side,
            &'e Change,
            Vec<(Option<&'e str>, Option<&'e str>, &'e Change)>,
        );
        let mut groups: Vec<Grouped<'_>> = Vec::new();
        for &(left_key, right_key, change) in entries {
            let Some((key_side, _)) = group_of(left_key, right_key, change) else {
                singles.push((left_key, right_key, change));
                continue;
            };
            let same = |(s, c, _): &&mut Grouped<'_>| {
                *s == key_side
                    && c.side == change.side
                    && c.op == change.op
                    && c.field == change.field
                    && c.reason == change.reason
            };
            match groups.iter_mut().find(same) {
                Some((_, _, members)) => members.push((left_key, right_key, change)),
                None => groups.push((key_side, change, vec![(left_key, right_key, change)])),
            }
        }
        for (key_side, change, members) in &groups {
            if let [single] = members.as_slice() {
                singles.push(*single);
            } else {
                let listed: Vec<Member> = members
                    .iter()
                    .filter_map(|&(left_key, right_key, c)| {
                        let (_, key) = group_of(left_key, right_key, c)?;
                        let values = (c.op == "update").then(|| {
                            (
                                c.old.as_ref().map(Value::encode),
                                c.new.as_ref().map(Value::encode),
                            )
                        });
                        Some(Member {
                            key: key.to_string(),
                            values,
                        })
                    })
                    .collect();
                self.journal_group(run, link, &at, *key_side, change, listed)?;
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
        mut members: Vec<Member>,
    ) -> Result<()> {
        let entry = self
            .db
            .query_opt(
                "INSERT INTO journal (run, at, link, side, op, field, reason, status, records)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'planned', $8) RETURNING id",
                &[
                    P::Int(run),
                    P::Text(at),
                    P::Text(link),
                    P::Text(change.side.as_str()),
                    P::Text(&change.op),
                    P::OptText(change.field.as_deref()),
                    P::Text(&change.reason),
                    P::Int(members.len() as i64),
                ],
            )?
            .ok_or_else(|| StateError::Corrupt("a journal insert returned no id".into()))?
            .int(0)?;
        // Updates by bucket: a record's chunks are then those of its bucket (see `bucket`).
        let updates = change.op == "update";
        if updates {
            members.sort_by_cached_key(|m| bucket(&m.key));
        }
        let runs = members.chunk_by(|a, b| !updates || bucket(&a.key) == bucket(&b.key));
        for run in runs {
            for chunk in run.chunks(MEMBER_CHUNK) {
                self.put_member_chunk(link, key_side, entry, chunk)?;
            }
        }
        Ok(())
    }

    /// Lists `members` (not empty) of grouped entry `entry`, one row.
    fn put_member_chunk(
        &mut self,
        link: &str,
        key_side: Side,
        entry: i64,
        members: &[Member],
    ) -> Result<()> {
        // A chunk of updates is found by its bucket, a chunk of creates by its key range.
        let bucket = members
            .first()
            .filter(|m| m.values.is_some())
            .map(|m| bucket_of(&m.key));
        let (first, last) = match &bucket {
            Some(b) => (b.as_str(), b.as_str()),
            None => (
                members
                    .iter()
                    .map(|m| m.key.as_str())
                    .min()
                    .unwrap_or_default(),
                members
                    .iter()
                    .map(|m| m.key.as_str())
                    .max()
                    .unwrap_or_default(),
            ),
        };
        let listed =
            serde_json::Value::Array(members.iter().map(Member::to_json).collect()).to_string();
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
              WHERE link = $1 AND key_side = $2
                AND ((first_key <= $3 AND last_key >= $3) OR first_key = $4)";
        let bucket = bucket_of(key);
        let base = [
            P::Text(link),
            P::Text(key_side.as_str()),
            P::Text(key),
            P::Text(&bucket),
        ];
        let rows = match planned {
            None => self.db.query(CHUNKS, &base)?,
            Some((at, side)) => self.db.query(
                &format!(
                    "{CHUNKS} AND entry IN (SELECT id FROM journal
                       WHERE id > $5 AND id <= $6 AND side = $7 AND status = 'planned')"
                ),
                &[
                    base[0],
                    base[1],
                    base[2],
                    base[3],
                    P::Int(at.after),
                    P::Int(at.upto),
                    P::Text(side.as_str()),
                ],
            )?,
        };
        let mut found = Vec::new();
        for r in rows {
            let listed = r.text(2)?;
            let corrupt =
                |why: String| StateError::Corrupt(format!("journal member chunk: {why}: {listed}"));
            let parsed: Vec<serde_json::Value> =
                serde_json::from_str(&listed).map_err(|e| corrupt(e.to_string()))?;
            let members = parsed
                .into_iter()
                .map(|m| {
                    Member::from_json(m).ok_or_else(|| {
                        corrupt("a member is neither a key nor [key, old, new]".into())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if members.iter().any(|m| m.key == key) {
                found.push(MemberChunk {
                    entry: r.int(0)?,
                    first_key: r.text(1)?,
                    members,
                });
            }
        }
        Ok(found)
    }

    /// The grouped entries that hold the record with encoded key `key` — a left or a
    /// right key, the other found through the id map — each with how it is listed there
    /// (the side and key, the left one when both are; an update's values).
    fn grouped_entries_of(
        &mut self,
        link: Option<&str>,
        key: &str,
    ) -> Result<BTreeMap<i64, (Side, Member)>> {
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
                        let Some(member) = chunk.members.into_iter().find(|m| m.key == candidate)
                        else {
                            continue;
                        };
                        found.entry(chunk.entry).or_insert((side, member));
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
        // Among the batch's grouped entries of that side still planned: a create found
        // as an entry of its own is in none; an update may be in one per field.
        let Some((key_side, key)) = member_key(keys.0, keys.1) else {
            return Ok(());
        };
        if updated > 0 && sole_key(keys.0, keys.1).is_some() {
            return Ok(());
        }
        for chunk in self.chunks_listing(link, key_side, key, Some((at, side)))? {
            self.leave_group(link, key_side, key, keys, status, chunk)?;
        }
        Ok(())
    }

    /// Takes the record `key` out of the grouped entry whose chunk lists it: an entry of
    /// its own with `status` (and, for an update, its values), one record fewer for the
    /// group, and the chunk listed again without it (gone when it was the last).
    fn leave_group(
        &mut self,
        link: &str,
        key_side: Side,
        key: &str,
        keys: (Option<&str>, Option<&str>),
        status: &str,
        chunk: MemberChunk,
    ) -> Result<()> {
        let entry = chunk.entry;
        let (old, new) = chunk
            .members
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| m.values.clone())
            .unwrap_or_default();
        self.db.execute(
            "INSERT INTO journal (run, at, link, left_key, right_key, side, op, field, old, new, reason, status)
             SELECT run, at, link, CAST($2 AS TEXT), CAST($3 AS TEXT), side, op, field,
                    COALESCE(CAST($5 AS TEXT), old), COALESCE(CAST($6 AS TEXT), new), reason, CAST($4 AS TEXT)
               FROM journal WHERE id = $1",
            &[
                P::Int(entry),
                P::OptText(keys.0),
                P::OptText(keys.1),
                P::Text(status),
                P::OptText(old.as_deref()),
                P::OptText(new.as_deref()),
            ],
        )?;
        self.db.execute(
            "UPDATE journal SET records = records - 1 WHERE id = $1",
            &[P::Int(entry)],
        )?;
        self.db.execute(
            "DELETE FROM journal_member_chunks WHERE link = $1 AND key_side = $2 AND first_key = $3 AND entry = $4",
            &[
                P::Text(link),
                P::Text(key_side.as_str()),
                P::Text(&chunk.first_key),
                P::Int(entry),
            ],
        )?;
        let rest: Vec<Member> = chunk.members.into_iter().filter(|m| m.key != key).collect();
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
        let mut partners: HashMap<(String, String), Option<String>> = HashMap::new();
        rows.iter()
            .map(|r| {
                let id = r.int(0)?;
                let records = r.opt_int(13)?;
                let (mut left_key, mut right_key) = (r.opt_text(4)?, r.opt_text(5)?);
                let (mut old, mut new) = (r.opt_text(9)?, r.opt_text(10)?);
                if let Some((side, member)) = grouped.get(&id).filter(|_| records.is_some()) {
                    match side {
                        Side::Left => left_key = Some(member.key.clone()),
                        Side::Right => right_key = Some(member.key.clone()),
                    }
                    if let Some((o, n)) = &member.values {
                        (old, new) = (o.clone(), n.clone());
                        // An update is listed under its left key; its pair names the
                        // right (asked once per link and key, however many entries).
                        let at = (r.text(3)?, member.key.clone());
                        right_key = match partners.get(&at) {
                            Some(known) => known.clone(),
                            None => {
                                let found = self
                                    .db
                                    .query_opt(
                                        "SELECT right_key FROM pairs WHERE link = $1 AND left_key = $2",
                                        &[P::Text(&at.0), P::Text(&at.1)],
                                    )?
                                    .map(|p| p.text(0))
                                    .transpose()?;
                                partners.insert(at, found.clone());
                                found
                            }
                        };
                    }
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
                    old: dec(old),
                    new: dec(new),
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
