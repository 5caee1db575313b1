//! What waits for a person: conflicts and quarantine.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct ConflictRow {
    pub link: String,
    pub left_key: String,
    pub right_key: String,
    pub unit: String,
    pub left_value: Vec<Value>,
    pub right_value: Vec<Value>,
    pub base_value: Option<Vec<Value>>,
    pub cause: String,
    pub status: String,
    pub resolution: Option<Vec<Value>>,
    pub detected_run: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineRow {
    pub link: String,
    pub side: Side,
    pub key: String,
    pub field: String,
    pub kind: QuarantineKind,
    pub reason: String,
    pub detected_run: i64,
}

/// Why a record (or one of its fields) is held for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineKind {
    /// Its key is NULL or repeats.
    BadKey,
    /// It holds a value that would arrive altered (or has no meaning on the right).
    BadValue,
    /// Its match key is shared by several unlinked records.
    AmbiguousMatch,
    /// A value that does not survive the way into the left's form.
    Meaning,
    /// A field that keeps being changed back; stays until released.
    Flapping,
    /// Deleted on one side, edited on the other, `delete_vs_edit = "hold"`.
    DeleteVsEdit,
    /// Deleted on one side under `on_delete = "hold"`.
    DeleteHeld,
    /// Its system refused the write.
    Rejected,
}

impl QuarantineKind {
    const ALL: [QuarantineKind; 8] = [
        QuarantineKind::BadKey,
        QuarantineKind::BadValue,
        QuarantineKind::AmbiguousMatch,
        QuarantineKind::Meaning,
        QuarantineKind::Flapping,
        QuarantineKind::DeleteVsEdit,
        QuarantineKind::DeleteHeld,
        QuarantineKind::Rejected,
    ];

    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            QuarantineKind::BadKey => "bad_key",
            QuarantineKind::BadValue => "bad_value",
            QuarantineKind::AmbiguousMatch => "ambiguous_match",
            QuarantineKind::Meaning => "meaning",
            QuarantineKind::Flapping => "flapping",
            QuarantineKind::DeleteVsEdit => "delete_vs_edit",
            QuarantineKind::DeleteHeld => "delete_held",
            QuarantineKind::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<QuarantineKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether it stays until a person releases it; the others are found again (or not)
    /// by every run.
    pub fn persists(self) -> bool {
        self == QuarantineKind::Flapping
    }
}

impl std::fmt::Display for QuarantineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
impl StateStore {
    // ---- conflicts -----------------------------------------------------------------

    fn decode_conflict(r: &Row) -> Result<ConflictRow> {
        Ok(ConflictRow {
            link: r.text(0)?,
            left_key: r.text(1)?,
            right_key: r.text(2)?,
            unit: r.text(3)?,
            left_value: dec_values(&r.text(4)?)?,
            right_value: dec_values(&r.text(5)?)?,
            base_value: r.opt_text(6)?.as_deref().map(dec_values).transpose()?,
            cause: r.text(7)?,
            status: r.text(8)?,
            resolution: r.opt_text(9)?.as_deref().map(dec_values).transpose()?,
            detected_run: r.int(10)?,
        })
    }

    pub fn conflicts(&mut self, link: Option<&str>) -> Result<Vec<ConflictRow>> {
        self.db
            .query(
                "SELECT link, left_key, right_key, unit, left_value, right_value, base_value, cause, status, resolution, detected_run
                   FROM conflicts WHERE (CAST($1 AS TEXT) IS NULL OR link = $1) ORDER BY link, left_key, unit",
                &[P::OptText(link)],
            )?
            .iter()
            .map(Self::decode_conflict)
            .collect()
    }

    /// Records an open conflict (or refreshes one still open with the same values; a
    /// person's resolution stays as long as the values it was made for do).
    pub(crate) fn upsert_conflict(&mut self, c: &ConflictRow, run: i64) -> Result<()> {
        let (lv, rv) = (enc_values(&c.left_value), enc_values(&c.right_value));
        let bv = c.base_value.as_deref().map(enc_values);
        self.db.execute(
            "INSERT INTO conflicts (link, left_key, right_key, unit, left_value, right_value, base_value, cause, status, detected_run, last_seen_run)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $9)
             ON CONFLICT (link, left_key, unit) DO UPDATE SET
               right_key = excluded.right_key, cause = excluded.cause, last_seen_run = excluded.last_seen_run,
               status = CASE WHEN conflicts.left_value = excluded.left_value AND conflicts.right_value = excluded.right_value THEN conflicts.status ELSE 'open' END,
               resolution = CASE WHEN conflicts.left_value = excluded.left_value AND conflicts.right_value = excluded.right_value THEN conflicts.resolution ELSE NULL END,
               detected_run = CASE WHEN conflicts.left_value = excluded.left_value AND conflicts.right_value = excluded.right_value THEN conflicts.detected_run ELSE excluded.detected_run END,
               left_value = excluded.left_value, right_value = excluded.right_value, base_value = excluded.base_value",
            &[
                P::Text(&c.link),
                P::Text(&c.left_key),
                P::Text(&c.right_key),
                P::Text(&c.unit),
                P::Text(&lv),
                P::Text(&rv),
                P::OptText(bv.as_deref()),
                P::Text(&c.cause),
                P::Int(run),
            ],
        )?;
        Ok(())
    }

    /// How many conflicts of `link` wait for a person, and how many quarantine entries it
    /// holds: counted by the store, for a gauge read after every cycle.
    pub fn attention_counts(&mut self, link: &str) -> Result<(u64, u64)> {
        let count = |s: &mut Self, sql: &str| -> Result<u64> {
            s.db.query_opt(sql, &[P::Text(link)])?
                .map_or(Ok(0), |r| r.int(0))
                .map(|n| u64::try_from(n).unwrap_or(0))
        };
        Ok((
            count(
                self,
                "SELECT count(*) FROM conflicts WHERE link = $1 AND status = 'open'",
            )?,
            count(self, "SELECT count(*) FROM quarantine WHERE link = $1")?,
        ))
    }

    pub fn resolve_conflict(
        &mut self,
        link: &str,
        left_key: &str,
        unit: &str,
        value: &[Value],
    ) -> Result<bool> {
        let n = self.db.execute(
            "UPDATE conflicts SET status = 'resolved', resolution = $4, resolved_at = $5 WHERE link = $1 AND left_key = $2 AND unit = $3",
            &[P::Text(link), P::Text(left_key), P::Text(unit), P::Text(&enc_values(value)), P::Text(&now())],
        )?;
        Ok(n > 0)
    }

    /// Forgets conflicts this run did not see again (someone fixed the data by hand, the
    /// resolution was written, or the pair is gone).
    pub(crate) fn prune_conflicts(&mut self, link: &str, run: i64) -> Result<()> {
        self.db.execute(
            "DELETE FROM conflicts WHERE link = $1 AND last_seen_run < $2",
            &[P::Text(link), P::Int(run)],
        )?;
        Ok(())
    }

    // ---- quarantine ----------------------------------------------------------------

    pub fn quarantine(&mut self, link: Option<&str>) -> Result<Vec<QuarantineRow>> {
        self.db
            .query(
                "SELECT link, side, key, field, kind, reason, detected_run FROM quarantine
                  WHERE (CAST($1 AS TEXT) IS NULL OR link = $1) ORDER BY link, key, field",
                &[P::OptText(link)],
            )?
            .iter()
            .map(|r| {
                Ok(QuarantineRow {
                    link: r.text(0)?,
                    side: side_of(&r.text(1)?),
                    key: r.text(2)?,
                    field: r.text(3)?,
                    kind: {
                        let k = r.text(4)?;
                        QuarantineKind::parse(&k).ok_or_else(|| {
                            StateError::Corrupt(format!("unknown quarantine kind {k:?}"))
                        })?
                    },
                    reason: r.text(5)?,
                    detected_run: r.int(6)?,
                })
            })
            .collect()
    }

    /// Persistent quarantine entries of a link, keyed by (side, encoded key, field).
    pub fn frozen(
        &mut self,
        link: &str,
    ) -> Result<std::collections::HashSet<(Side, String, String)>> {
        Ok(self
            .quarantine(Some(link))?
            .into_iter()
            .filter(|q| q.kind.persists())
            .map(|q| (q.side, q.key, q.field))
            .collect())
    }

    pub(crate) fn put_quarantine(&mut self, q: &QuarantineRow, run: i64) -> Result<()> {
        self.db.execute(
            "INSERT INTO quarantine (link, side, key, field, kind, reason, detected_run, last_seen_run) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (link, side, key, field, kind) DO UPDATE SET reason = excluded.reason, last_seen_run = excluded.last_seen_run",
            &[
                P::Text(&q.link),
                P::Text(q.side.as_str()),
                P::Text(&q.key),
                P::Text(&q.field),
                P::Text(q.kind.as_str()),
                P::Text(&q.reason),
                P::Int(run),
            ],
        )?;
        Ok(())
    }

    /// Clears findings this run did not make again; persistent kinds stay.
    pub(crate) fn prune_quarantine(&mut self, link: &str, run: i64) -> Result<()> {
        self.db.execute(
            "DELETE FROM quarantine WHERE link = $1 AND last_seen_run < $2 AND kind <> $3",
            &[
                P::Text(link),
                P::Int(run),
                P::Text(QuarantineKind::Flapping.as_str()),
            ],
        )?;
        Ok(())
    }

    pub fn release_quarantine(
        &mut self,
        link: &str,
        key: &str,
        field: Option<&str>,
    ) -> Result<u64> {
        self.db.execute(
            "DELETE FROM quarantine WHERE link = $1 AND key = $2 AND (CAST($3 AS TEXT) IS NULL OR field = $3)",
            &[P::Text(link), P::Text(key), P::OptText(field)],
        )
    }
}
