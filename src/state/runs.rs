//! Runs and links: run history, which config and systems each link's rows belong to.

use super::*;

impl StateStore {
    // ---- runs and links -------------------------------------------------------------

    /// Records a new run, `running`, and holds its id until [`finish_run`](Self::finish_run)
    /// (or the process's end): while held, no other run takes it for dead.
    pub fn begin_run(&mut self, command: &str) -> Result<i64> {
        // Held before the row is visible to anyone, so no run ever sees it unheld.
        self.transaction(|s| {
            let id = s
                .db
                .query_opt("INSERT INTO runs (started_at, command, status) VALUES ($1, $2, 'running') RETURNING id", &[P::Text(&now()), P::Text(command)])?
                .ok_or_else(|| StateError::Corrupt("no run id returned".into()))?
                .int(0)?;
            match lease::hold(&mut s.db, s.leases.as_mut(), lease::Hold::Run(id))? {
                LinkHold::Held => Ok(id),
                LinkHold::HeldElsewhere(holder) => Err(StateError::Lease(format!(
                    "run {id} is new, yet {holder} holds it: is another store's lock folder shared with this one?"
                ))),
            }
        })
    }

    pub fn finish_run(
        &mut self,
        run: i64,
        status: &str,
        summary: &serde_json::Value,
    ) -> Result<()> {
        self.transaction(|s| {
            if status == "failed" {
                // A batch whose writes failed part-way may have reached its system or not:
                // `unknown`, as after a crash, and the next run looks before it writes.
                s.planned_to_unknown("run = $1", &[P::Int(run)])?;
            }
            s.db.execute(
                "UPDATE runs SET finished_at = $1, status = $2, summary = $3 WHERE id = $4",
                &[
                    P::Text(&now()),
                    P::Text(status),
                    P::Text(&summary.to_string()),
                    P::Int(run),
                ],
            )?;
            Ok(())
        })?;
        lease::release(&mut self.db, self.leases.as_mut(), lease::Hold::Run(run))
    }

    /// Entries of the runs `runs` selects (an SQL condition on `journal.run`) that have
    /// no outcome: their writes may have reached the system or not.
    /// The entries of `run` still `planned` become `unknown`: their batch may have
    /// reached its system or not (a link that failed part-way and runs again).
    pub(crate) fn run_planned_to_unknown(&mut self, run: i64) -> Result<u64> {
        self.planned_to_unknown("run = $1", &[P::Int(run)])
    }

    fn planned_to_unknown(&mut self, runs: &str, params: &[P<'_>]) -> Result<u64> {
        self.db.execute(
            &format!(
                "UPDATE journal SET status = 'unknown' WHERE {runs} AND status = 'planned' AND NOT {}",
                schema::applied_by_batch("journal")
            ),
            params,
        )
    }

    /// Runs that never finished (the process died) are marked so, and the writes they
    /// journaled as planned become `unknown`: the next run looks them up before retrying.
    /// A run still `running` whose id another process holds is still going, and is left
    /// alone.
    pub fn mark_interrupted_runs(&mut self) -> Result<u64> {
        let running = self
            .db
            .query("SELECT id FROM runs WHERE status = 'running'", &[])?
            .iter()
            .map(|r| r.int(0))
            .collect::<Result<Vec<i64>>>()?;
        // Held outside the transaction: waiting for a hold must not keep the store's
        // writers (that live run among them) waiting too. One wait for all runs.
        let deadline = std::time::Instant::now() + lease::PATIENCE;
        let mut dead = Vec::new();
        for run in running {
            let hold = lease::Hold::Run(run);
            match lease::hold_by(&mut self.db, self.leases.as_mut(), hold, deadline) {
                Ok(LinkHold::Held) => dead.push(run),
                Ok(LinkHold::HeldElsewhere(_)) => {}
                Err(e) => {
                    self.release_runs(&dead)?;
                    return Err(e);
                }
            }
        }
        let marked = self.transaction(|s| {
            let mut marked = 0;
            for &run in &dead {
                s.planned_to_unknown("run = $1", &[P::Int(run)])?;
                marked += s.db.execute(
                    "UPDATE runs SET status = 'interrupted' WHERE id = $1 AND status = 'running'",
                    &[P::Int(run)],
                )?;
            }
            Ok(marked)
        });
        self.release_runs(&dead)?;
        marked
    }

    fn release_runs(&mut self, runs: &[i64]) -> Result<()> {
        runs.iter().try_for_each(|&run| {
            lease::release(&mut self.db, self.leases.as_mut(), lease::Hold::Run(run))
        })
    }

    pub fn last_runs(&mut self, limit: i64) -> Result<Vec<serde_json::Value>> {
        let rows = self.db.query(
            "SELECT id, started_at, finished_at, command, status, summary FROM runs ORDER BY id DESC LIMIT $1",
            &[P::Int(limit)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "run": r.int(0)?,
                    "started_at": r.text(1)?,
                    "finished_at": r.opt_text(2)?,
                    "command": r.text(3)?,
                    "status": r.text(4)?,
                    "summary": r.opt_text(5)?.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()),
                }))
            })
            .collect()
    }

    /// The link's identity and run counter, `None` for a link the store has never seen.
    pub(crate) fn link_state(&mut self, link: &str) -> Result<Option<(String, i64)>> {
        match self.db.query_opt(
            "SELECT identity, run_seq FROM links WHERE name = $1",
            &[P::Text(link)],
        )? {
            Some(r) => Ok(Some((r.text(0)?, r.int(1)?))),
            None => Ok(None),
        }
    }

    /// The identities of the systems (`[left, right]`) a link's pairs were made with
    /// (see `Connector::identity`), as [`set_link_systems`](Self::set_link_systems)
    /// recorded them; `None` for a new link or one recorded before stores kept them.
    pub(crate) fn link_systems(&mut self, link: &str) -> Result<Option<[String; 2]>> {
        let Some(row) = self.db.query_opt(
            "SELECT systems FROM links WHERE name = $1",
            &[P::Text(link)],
        )?
        else {
            return Ok(None);
        };
        row.opt_text(0)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| StateError::Corrupt(format!("the systems of link {link}: {e}")))
            })
            .transpose()
    }

    pub(crate) fn set_link_systems(&mut self, link: &str, systems: &[String; 2]) -> Result<()> {
        let text = serde_json::to_string(systems).expect("strings serialize");
        self.db.execute(
            "UPDATE links SET systems = $2 WHERE name = $1",
            &[P::Text(link), P::Text(&text)],
        )?;
        Ok(())
    }

    /// Deletes a link's pairs, conflicts and quarantine: what describes its records.
    fn drop_link_rows(&mut self, link: &str) -> Result<()> {
        for table in ["pairs", "conflicts", "quarantine"] {
            self.db.execute(
                &format!("DELETE FROM {table} WHERE link = $1"),
                &[P::Text(link)],
            )?;
        }
        // Cursors describe the records the pairs were made from.
        self.db.execute(
            "UPDATE links SET reads = NULL WHERE name = $1",
            &[P::Text(link)],
        )?;
        Ok(())
    }

    /// Forgets a link's id map, bases, conflicts and quarantine, on purpose (`run
    /// --relink`): its records are paired again from scratch.
    pub(crate) fn forget_link(&mut self, link: &str) -> Result<()> {
        self.transaction(|s| s.drop_link_rows(link))
    }

    /// Starts a new run of a link: records its identity, bumps its run counter. When the
    /// identity changed (the config now points at other collections or keys), the old id
    /// map and base are dropped: they describe other records.
    pub(crate) fn begin_link_run(&mut self, link: &str, identity: &str) -> Result<(i64, bool)> {
        self.transaction(|s| {
            let existing = s.link_state(link)?;
            let reset = matches!(&existing, Some((id, _)) if id != identity);
            if reset {
                s.drop_link_rows(link)?;
            }
            let seq = existing.map_or(0, |(_, seq)| seq) + 1;
            s.db.execute(
                "INSERT INTO links (name, identity, run_seq) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET identity = excluded.identity, run_seq = excluded.run_seq",
                &[P::Text(link), P::Text(identity), P::Int(seq)],
            )?;
            Ok((seq, reset))
        })
    }

    /// How `link`'s sides were last read: `None` before its first cycle that reads by
    /// cursor. A store at v7 opened read-only (by `plan` before the upgrading `run`)
    /// has no record of it yet, and reads as `None` too.
    pub fn link_reads(&mut self, link: &str) -> Result<Option<LinkReads>> {
        let row = match self
            .db
            .query_opt("SELECT reads FROM links WHERE name = $1", &[P::Text(link)])
        {
            Ok(row) => row,
            Err(_) if self.read_only => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(text) = row.map(|r| r.opt_text(0)).transpose()?.flatten() else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt(format!("how link {link} was read: {e}")))
    }

    /// Records how `link` was read. Called in the transaction that ends the link's run:
    /// a cursor never runs ahead of the state it covers.
    pub(crate) fn set_link_reads(&mut self, link: &str, reads: &LinkReads) -> Result<()> {
        let text = serde_json::to_string(reads).expect("reads serialize");
        self.db.execute(
            "UPDATE links SET reads = $2 WHERE name = $1",
            &[P::Text(link), P::Text(&text)],
        )?;
        Ok(())
    }

    /// Takes `link` for this process until [`release_link`](Self::release_link) (or the
    /// process's end), unless another process holds it: one run of a link at a time,
    /// whichever machines share the store.
    pub fn hold_link(&mut self, link: &str) -> Result<LinkHold> {
        let deadline = std::time::Instant::now() + lease::PATIENCE;
        lease::hold_by(
            &mut self.db,
            self.leases.as_mut(),
            lease::Hold::Link(link),
            deadline,
        )
    }

    /// Who is running `link` right now, if anyone: looked at, not taken (and never
    /// this process's own hold).
    pub fn link_holder(&mut self, link: &str) -> Result<Option<String>> {
        lease::holder(&mut self.db, self.leases.as_ref(), lease::Hold::Link(link))
    }

    pub fn release_link(&mut self, link: &str) -> Result<()> {
        lease::release(&mut self.db, self.leases.as_mut(), lease::Hold::Link(link))
    }
}

/// How a link's sides were read, kept between runs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkReads {
    /// Per side (left, right): the furthest cursor value read, as `Key::encode` holds
    /// a one-part key; `None` until a read of that side saw one.
    pub cursor: [Option<String>; 2],
    /// Cycles since the last full read.
    pub since_full: u32,
    /// Whether the last run that started on this link ended: one that did not (a crash,
    /// a lost connection) is followed by a full read, which finds what it left behind.
    pub clean: bool,
    /// Per side: its key ranges and their digests as of the last reconciliation.
    #[serde(default)]
    pub ranges: [Option<Ranges>; 2],
    /// Per side: the column its cursor position is a value of; a position of another
    /// column (the config changed) is not used.
    #[serde(default)]
    pub cursor_columns: [Option<String>; 2],
    /// Why a side keeps no key ranges, when a full read found it cannot (its keys).
    #[serde(default)]
    pub no_ranges: Option<String>,
    /// A fingerprint of what the link syncs and how (fields, columns, transforms,
    /// meanings, owners) as of the last read. Records that did not change since are
    /// not read by a cursor or digest cycle, so a field added or a transform changed
    /// would never reach them: a different fingerprint makes the next cycle read in full.
    #[serde(default)]
    pub fields: Option<String>,
    /// Whether the last cycle kept its positions because a write was found stale (see
    /// `engine::reading::held_if_stale`): the next one does not keep them again.
    #[serde(default)]
    pub held: bool,
}

/// A side's key ranges: `bounds` are the encoded lower bounds of ranges 1.. (range 0
/// holds every key below the first), `digests` one per range.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ranges {
    pub bounds: Vec<String>,
    pub digests: Vec<crate::connectors::RangeDigest>,
}

impl Ranges {
    /// A digest no system computes: the range is read by the next reconciliation.
    pub fn unknown() -> crate::connectors::RangeDigest {
        crate::connectors::RangeDigest {
            rows: u64::MAX,
            digest: "unknown".into(),
        }
    }

    /// The range an encoded key falls in.
    pub fn range_of(&self, encoded: &str) -> usize {
        self.bounds.partition_point(|b| b.as_str() <= encoded)
    }
}

impl LinkReads {
    /// The position of a side's cursor (0 left, 1 right), as a value.
    pub fn position(&self, side: usize) -> Option<crate::model::Value> {
        self.cursor[side]
            .as_deref()
            .and_then(|s| crate::model::Key::decode(s).ok())
            .and_then(|k| k.0.into_iter().next())
    }
}
