//! Pairs: the id map and the base, read and written together.

use super::*;

impl StateStore {
    // ---- pairs (id map + base) --------------------------------------------------------

    fn decode_pair(names: &mut std::collections::HashSet<Name>, r: &Row) -> Result<PairRow> {
        let left_key = r.text(0)?;
        let base = decode_base(&r.text_ref(2)?, names)
            .map_err(|e| StateError::Corrupt(format!("base of {left_key}: {e}")))?;
        let marks = match r.opt_text(3)? {
            Some(m) => serde_json::from_str(&m)
                .map_err(|e| StateError::Corrupt(format!("marks of {left_key}: {e}")))?,
            None => BTreeMap::new(),
        };
        let tombstone = r.opt_text(4)?.map(|t| side_of(&t));
        let held = match r.opt_text(5)? {
            Some(h) => {
                decode_held(&h).map_err(|e| StateError::Corrupt(format!("pair {left_key}: {e}")))?
            }
            None => Held::default(),
        };
        Ok(PairRow {
            left_key,
            right_key: r.text(1)?,
            base,
            marks,
            tombstone,
            held,
        })
    }

    /// Pairs by one side's encoded keys, a chunk of keys per statement.
    pub fn pairs_by(
        &mut self,
        link: &str,
        side: Side,
        keys: &[String],
    ) -> Result<HashMap<String, PairRow>> {
        let (statement, column) = match side {
            Side::Left => ("pairs_by_left", "left_key"),
            Side::Right => ("pairs_by_right", "right_key"),
        };
        if let Some(found) = self.pairs_in_range(link, side, keys)? {
            return Ok(found);
        }
        let mut out = HashMap::new();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let sql = self.multi_row_sql(statement, chunk.len(), |n| {
                format!(
                    "SELECT left_key, right_key, base, marks, tombstone, held FROM pairs WHERE link = $1 AND {column} IN ({})",
                    placeholders(2, n)
                )
            });
            let params: Vec<P<'_>> = std::iter::once(P::Text(link))
                .chain(chunk.iter().map(|k| P::Text(k)))
                .collect();
            for r in self.db.query(&sql, &params)? {
                let pair = Self::decode_pair(&mut self.names, &r)?;
                let key = match side {
                    Side::Left => pair.left_key.clone(),
                    Side::Right => pair.right_key.clone(),
                };
                out.insert(key, pair);
            }
        }
        Ok(out)
    }

    /// [`pairs_by`](Self::pairs_by) as one walk of the key range the keys span, in an
    /// embedded store: a scan reads keys in the order the store sorts them (integer keys
    /// have a sortable form), so a batch's pairs lie together and one range read replaces
    /// a thousand index lookups. `None` when the range holds more than twice as many
    /// pairs as keys (the system sorts its keys otherwise), and the keys are then looked
    /// up one by one. In PostgreSQL, where text compares by collation rather than by
    /// bytes, never.
    fn pairs_in_range(
        &mut self,
        link: &str,
        side: Side,
        keys: &[String],
    ) -> Result<Option<HashMap<String, PairRow>>> {
        let (Db::Sqlite { .. }, Some(low), Some(high)) =
            (&self.db, keys.iter().min(), keys.iter().max())
        else {
            return Ok(None);
        };
        if keys.len() < 2 {
            return Ok(None);
        }
        let limit = 2 * keys.len() as i64;
        // The key's column, and its place among the selected ones.
        let (column, key_at) = match side {
            Side::Left => ("left_key", 0),
            Side::Right => ("right_key", 1),
        };
        let sql = format!(
            "SELECT left_key, right_key, base, marks, tombstone, held FROM pairs
              WHERE link = $1 AND {column} BETWEEN $2 AND $3 ORDER BY {column} LIMIT $4"
        );
        let rows = self.db.query(
            &sql,
            &[P::Text(link), P::Text(low), P::Text(high), P::Int(limit)],
        )?;
        if rows.len() as i64 >= limit {
            return Ok(None);
        }
        let wanted: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        let mut out = HashMap::new();
        for r in rows {
            let key = r.text_ref(key_at)?;
            if wanted.contains(&*key) {
                let key = key.into_owned();
                out.insert(key, Self::decode_pair(&mut self.names, &r)?);
            }
        }
        Ok(Some(out))
    }

    pub fn pair_count(&mut self, link: &str) -> Result<i64> {
        self.db
            .query_opt(
                "SELECT count(*) FROM pairs WHERE link = $1",
                &[P::Text(link)],
            )?
            .map_or(Ok(0), |r| r.int(0))
    }

    /// Whether the link holds any pair: one index probe, where counting them is a scan.
    pub(crate) fn has_pairs(&mut self, link: &str) -> Result<bool> {
        Ok(self
            .db
            .query_opt(
                "SELECT 1 FROM pairs WHERE link = $1 LIMIT 1",
                &[P::Text(link)],
            )?
            .is_some())
    }

    /// Inserts or replaces pairs, many rows per statement. Their left keys must differ
    /// (one statement cannot upsert a row twice).
    ///
    /// A pair that keeps its right key (every update of a linked record) is written by an
    /// `UPDATE` that leaves the right-key index alone: an upsert that sets `right_key`
    /// rewrites that index's entry too, a second random page per record, which on a large
    /// link doubled the pages a batch dirtied. Only the rest (new pairs, re-pointed ones)
    /// take the upsert.
    pub(crate) fn put_pairs(&mut self, link: &str, pairs: &[EncodedPair]) -> Result<()> {
        for chunk in pairs.chunks(WRITE_CHUNK) {
            let sql = self.multi_row_sql("pairs_kept", chunk.len(), |n| {
                format!(
                    "UPDATE pairs SET base = w.base, marks = w.marks, tombstone = w.tomb, held = w.held
                       FROM (SELECT column1 AS lk, column2 AS rk, column3 AS base, column4 AS marks,
                                    column5 AS tomb, column6 AS held FROM (VALUES {}) AS v) AS w
                      WHERE pairs.link = $1 AND pairs.left_key = w.lk AND pairs.right_key = w.rk
                      RETURNING pairs.left_key",
                    row_tuples(n, "", 2, 6, "")
                )
            });
            let kept: std::collections::HashSet<String> = self
                .db
                .query(&sql, &pair_params(link, chunk))?
                .iter()
                .map(|r| r.text(0))
                .collect::<Result<_>>()?;
            if kept.len() == chunk.len() {
                continue;
            }
            let rest: Vec<&EncodedPair> = chunk
                .iter()
                .filter(|p| !kept.contains(&p.left_key))
                .collect();
            self.upsert_pairs(link, &rest)?;
        }
        Ok(())
    }

    /// Writes the pairs of records just created: [`put_pairs`](Self::put_pairs) without
    /// its first try, an update of pairs that keep their right key, which a new record's
    /// pair never does (a first load's million pairs each paid for that statement's
    /// parameters and probes).
    pub(crate) fn put_new_pairs(&mut self, link: &str, pairs: &[EncodedPair]) -> Result<()> {
        for chunk in pairs.chunks(WRITE_CHUNK) {
            let rows: Vec<&EncodedPair> = chunk.iter().collect();
            self.upsert_pairs(link, &rows)?;
        }
        Ok(())
    }

    /// Inserts pairs, or replaces those of the same left keys, in one statement.
    fn upsert_pairs(&mut self, link: &str, rest: &[&EncodedPair]) -> Result<()> {
        if rest.is_empty() {
            return Ok(());
        }
        let sql = self.multi_row_sql("pairs", rest.len(), |n| {
            format!(
                "INSERT INTO pairs (link, left_key, right_key, base, marks, tombstone, held) VALUES {}
                 ON CONFLICT (link, left_key) DO UPDATE SET right_key = excluded.right_key, base = excluded.base,
                   marks = excluded.marks, tombstone = excluded.tombstone, held = excluded.held",
                row_tuples(n, "$1, ", 2, 6, "")
            )
        });
        self.db
            .execute(&sql, &pair_params(link, rest.iter().copied()))?;
        Ok(())
    }

    pub(crate) fn delete_pair_by_right(&mut self, link: &str, right_key: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM pairs WHERE link = $1 AND right_key = $2",
            &[P::Text(link), P::Text(right_key)],
        )?;
        Ok(())
    }

    pub(crate) fn delete_pair(&mut self, link: &str, left_key: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM pairs WHERE link = $1 AND left_key = $2",
            &[P::Text(link), P::Text(left_key)],
        )?;
        Ok(())
    }
}

/// The link, then each pair's six columns, as `put_pairs`' statements take them.
fn pair_params<'a>(link: &'a str, pairs: impl IntoIterator<Item = &'a EncodedPair>) -> Vec<P<'a>> {
    let mut params = vec![P::Text(link)];
    for p in pairs {
        params.extend([
            P::Text(&p.left_key),
            P::Text(&p.right_key),
            P::Text(&p.base),
            P::OptText(p.marks.as_deref()),
            P::OptText(p.tombstone.map(Side::as_str)),
            P::OptText(p.held.as_deref()),
        ]);
    }
    params
}
