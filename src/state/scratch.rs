//! Scratch tables for one run: records seen, records waiting to be matched, the staged plan.

use super::*;

impl StateStore {
    // ---- scratch tables for one run ---------------------------------------------------

    pub(crate) fn clear_scratch(&mut self) -> Result<()> {
        self.db.batch(
            "DELETE FROM seen; DELETE FROM unlinked; DELETE FROM matches; DELETE FROM plan;
             DROP INDEX IF EXISTS unlinked_key; DROP INDEX IF EXISTS unlinked_match;
             DROP INDEX IF EXISTS unlinked_ref; DROP INDEX IF EXISTS unlinked_text;",
        )
    }

    /// Remembers that linked keys were present in this run's scan of `side`.
    pub(crate) fn mark_seen(&mut self, side: Side, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let sql = self.multi_row_sql("seen", chunk.len(), |n| {
                format!(
                    "INSERT INTO seen (side, key) VALUES {} ON CONFLICT DO NOTHING",
                    row_tuples(n, "$1, ", 2, 1, "")
                )
            });
            let params: Vec<P<'_>> = std::iter::once(P::Text(side.as_str()))
                .chain(chunk.iter().map(|k| P::Text(k)))
                .collect();
            self.db.execute(&sql, &params)?;
        }
        Ok(())
    }

    /// For right keys: whether each is linked, tombstoned, and whether its left partner
    /// was seen in this run's left scan. Unlinked keys are absent.
    pub(crate) fn right_links(
        &mut self,
        link: &str,
        right_keys: &[String],
    ) -> Result<HashMap<String, RightLink>> {
        let mut out = HashMap::new();
        // The keys join as a VALUES list: with `right_key IN (…)` SQLite's planner scans
        // the link's whole primary key instead of looking each key up in `pairs_by_right`.
        for chunk in right_keys.chunks(LOOKUP_CHUNK) {
            let sql = self.multi_row_sql("right_links", chunk.len(), |n| {
                format!(
                    "SELECT p.right_key, CASE WHEN p.tombstone IS NULL THEN 0 ELSE 1 END,
                            CASE WHEN EXISTS (SELECT 1 FROM seen s WHERE s.side = 'left' AND s.key = p.left_key) THEN 1 ELSE 0 END
                       FROM (SELECT column1 AS k FROM (VALUES {}) AS keys) AS wanted
                       JOIN pairs p ON p.link = $1 AND p.right_key = wanted.k",
                    row_tuples(n, "", 2, 1, "")
                )
            });
            let params: Vec<P<'_>> = std::iter::once(P::Text(link))
                .chain(chunk.iter().map(|k| P::Text(k)))
                .collect();
            for r in self.db.query(&sql, &params)? {
                out.insert(
                    r.text(0)?,
                    RightLink {
                        tombstoned: r.int(1)? != 0,
                        left_seen: r.int(2)? != 0,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Pairs neither of whose records was seen in this run's scans (or whose surviving
    /// record of a tombstoned pair is gone).
    pub(crate) fn pairs_with_nothing_left(&mut self, link: &str) -> Result<Vec<String>> {
        self.db
            .query(
                "SELECT left_key FROM pairs p WHERE link = $1
                   AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.side = 'left' AND s.key = p.left_key)
                   AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.side = 'right' AND s.key = p.right_key)",
                &[P::Text(link)],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    /// The `side` keys of pairs whose `side` key lies in `[from, to)` (encoded keys,
    /// compared as text: they sort as integer and uuid keys do) that this run has not
    /// seen on that side.
    pub(crate) fn unseen_pairs_in_range(
        &mut self,
        link: &str,
        side: Side,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<String>> {
        let column = match side {
            Side::Left => "left_key",
            Side::Right => "right_key",
        };
        let mut sql = format!(
            "SELECT {column} FROM pairs p WHERE link = $1 AND tombstone IS NULL
               AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.side = $2 AND s.key = p.{column})"
        );
        let mut params = vec![P::Text(link), P::Text(side.as_str())];
        for (bound, op) in [(from, ">="), (to, "<")] {
            if let Some(b) = bound {
                params.push(P::Text(b));
                sql.push_str(&format!(" AND {column} {op} ${}", params.len()));
            }
        }
        self.db
            .query(&sql, &params)?
            .iter()
            .map(|r| r.text(0))
            .collect()
    }

    /// Stages a record no pair knows, to be matched once both sides are read.
    /// Stages records with no pair, to be matched after both scans; many rows per
    /// statement.
    pub(crate) fn stage_unlinked(&mut self, side: Side, records: &[Unlinked]) -> Result<()> {
        for chunk in records.chunks(WRITE_CHUNK) {
            let encoded: Vec<[String; 3]> = chunk
                .iter()
                .map(|rec| {
                    [
                        rec.key.encode(),
                        rec.key.display_text(),
                        enc_values(&rec.values),
                    ]
                })
                .collect();
            let sql = self.multi_row_sql("unlinked", chunk.len(), |n| {
                format!(
                    "INSERT INTO unlinked (side, key, key_text, match_key, ref, record) VALUES {}",
                    row_tuples(n, "$1, ", 2, 5, "")
                )
            });
            let mut params = vec![P::Text(side.as_str())];
            for (rec, [key, key_text, record]) in chunk.iter().zip(&encoded) {
                params.extend([
                    P::Text(key),
                    P::Text(key_text),
                    P::OptText(rec.match_key.as_deref()),
                    P::OptText(rec.ext_ref.as_deref()),
                    P::Text(record),
                ]);
            }
            self.db.execute(&sql, &params)?;
        }
        Ok(())
    }

    /// Pairs staged records, first by external-id reference, then by normalized match
    /// key. A reference or match key that more than one record shares on either side is
    /// ambiguous: those records are returned as such (side, key, match key), never guessed.
    pub(crate) fn match_unlinked(&mut self, by_refs: bool) -> Result<Vec<(Side, String, String)>> {
        // Indexes are built once here, after staging: cheaper than maintaining them
        // through a million random inserts. Matches name records by their scratch ids,
        // so marking and pairing them are rowid lookups, not key lookups.
        self.db.batch(schema::TEMP_INDEXES)?;
        if by_refs {
            self.db.batch(schema::TEMP_REF_INDEXES)?;
            self.db.batch(
                "-- a right record whose right_ref names a left key, and that is the only one to
                 INSERT INTO matches (left_id, right_id, how)
                   SELECT l.id, r.id, 'right_ref' FROM unlinked r JOIN unlinked l
                     ON l.side = 'left' AND r.side = 'right' AND r.ref = l.key_text
                   WHERE (SELECT count(*) FROM unlinked r2 WHERE r2.side = 'right' AND r2.ref = l.key_text) = 1
                 ON CONFLICT DO NOTHING;
                 INSERT INTO matches (left_id, right_id, how)
                   SELECT l.id, r.id, 'left_ref' FROM unlinked l JOIN unlinked r
                     ON l.side = 'left' AND r.side = 'right' AND l.ref = r.key_text
                   WHERE (SELECT count(*) FROM unlinked l2 WHERE l2.side = 'left' AND l2.ref = r.key_text) = 1
                     AND NOT EXISTS (SELECT 1 FROM matches m WHERE m.left_id = l.id OR m.right_id = r.id)
                 ON CONFLICT DO NOTHING;
                 UPDATE unlinked SET matched = 1 WHERE id IN (SELECT left_id FROM matches);
                 UPDATE unlinked SET matched = 1 WHERE id IN (SELECT right_id FROM matches);",
            )?;
        }
        self.db.batch(
            "-- match_on: a key held by exactly two unmatched records, one on each side
             -- (one pass over the match-key index, grouped)
             INSERT INTO matches (left_id, right_id, how)
               SELECT MIN(CASE WHEN side = 'left' THEN id END), MIN(CASE WHEN side = 'right' THEN id END), 'match_on'
                 FROM unlinked WHERE matched = 0 AND match_key IS NOT NULL
                GROUP BY match_key
               HAVING COUNT(*) = 2 AND MIN(side) <> MAX(side)
             ON CONFLICT DO NOTHING;
             UPDATE unlinked SET matched = 1 WHERE id IN (SELECT left_id FROM matches WHERE how = 'match_on');
             UPDATE unlinked SET matched = 1 WHERE id IN (SELECT right_id FROM matches WHERE how = 'match_on');
             -- ambiguous: a match key shared by several records, present on both sides
             UPDATE unlinked SET matched = 2 WHERE matched = 0 AND match_key IN (
               SELECT match_key FROM unlinked WHERE matched = 0 AND match_key IS NOT NULL
               GROUP BY match_key HAVING count(DISTINCT side) = 2);",
        )?;
        self.db
            .query("SELECT side, key, match_key FROM unlinked WHERE matched = 2 ORDER BY match_key, side, key", &[])?
            .iter()
            .map(|r| Ok((side_of(&r.text(0)?), r.text(1)?, r.text(2)?)))
            .collect()
    }

    /// Matched pairs, `limit` at a time after `after` (an id), with both records.
    pub(crate) fn matched_page(
        &mut self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Unlinked, Unlinked, String)>> {
        self.db
            .query(
                // CROSS JOIN fixes SQLite's join order: pages walk `matches` by id and
                // look both records up. Left to itself it scans every unlinked record and
                // sorts them, once per page, which is quadratic in the collection.
                "SELECT m.id, l.key, l.record, r.key, r.record, m.how
                   FROM matches m CROSS JOIN unlinked l CROSS JOIN unlinked r
                  WHERE m.id > $1 AND l.id = m.left_id AND r.id = m.right_id
                  ORDER BY m.id LIMIT $2",
                &[P::Int(after), P::Int(limit as i64)],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.int(0)?,
                    Unlinked::decode(&r.text(1)?, &r.text(2)?)?,
                    Unlinked::decode(&r.text(3)?, &r.text(4)?)?,
                    r.text(5)?,
                ))
            })
            .collect()
    }

    /// Records of one side that matched nothing, `limit` at a time after an id.
    pub(crate) fn unmatched_page(
        &mut self,
        side: Side,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Unlinked)>> {
        self.db
            .query(
                // `side || ''`: walk the ids in order instead of the side's index plus a
                // sort per page (quadratic over a large collection).
                "SELECT id, key, record FROM unlinked WHERE side || '' = $1 AND matched = 0 AND id > $2 ORDER BY id LIMIT $3",
                &[P::Text(side.as_str()), P::Int(after), P::Int(limit as i64)],
            )?
            .iter()
            .map(|r| Ok((r.int(0)?, Unlinked::decode(&r.text(1)?, &r.text(2)?)?)))
            .collect()
    }

    pub(crate) fn stage_plan(&mut self, body: &str) -> Result<()> {
        self.db
            .execute("INSERT INTO plan (body) VALUES ($1)", &[P::Text(body)])?;
        Ok(())
    }

    pub(crate) fn plan_page(&mut self, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.db
            .query(
                "SELECT seq, body FROM plan WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[P::Int(after), P::Int(limit as i64)],
            )?
            .iter()
            .map(|r| Ok((r.int(0)?, r.text(1)?)))
            .collect()
    }
}
/// What the right scan needs to know about a linked right key.
#[derive(Debug, Clone, Copy)]
pub struct RightLink {
    pub tombstoned: bool,
    pub left_seen: bool,
}

/// A record staged for matching.
#[derive(Debug, Clone)]
pub struct Unlinked {
    pub key: Key,
    pub match_key: Option<String>,
    /// Its external-id column's value (the other side's key as text), if any.
    pub ext_ref: Option<String>,
    pub values: Vec<Value>,
}

impl Unlinked {
    fn decode(key: &str, record: &str) -> Result<Unlinked> {
        Ok(Unlinked {
            key: Key::decode(key).map_err(|e| StateError::Corrupt(e.to_string()))?,
            match_key: None,
            ext_ref: None,
            values: dec_values(record)?,
        })
    }
}
