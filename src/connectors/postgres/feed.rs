//! PostgreSQL logical replication as a change feed (`feed = "logical"`).
//!
//! A logical replication slot with the built-in `pgoutput` plugin, filtered by a
//! publication of the collection, read through the SQL interface to logical decoding
//! (`pg_logical_slot_peek_binary_changes`) on an ordinary connection: no replication
//! connection or protocol of its own, and a read moves nothing. The slot is advanced
//! (`pg_replication_slot_advance`) only once the cycle that used the changes is
//! committed in the state store, so a crash re-reads them and never skips any.
//!
//! Only keys are taken from the log: a cycle fetches the records as they are now, so a
//! column the log leaves out (an unchanged TOASTed value) or an older version of a row
//! changed twice can never be written anywhere.
//!
//! syncline's own writes run under a replication origin named after the slot
//! (`pg_replication_origin_session_setup`), and their transactions are skipped here; the
//! three-way comparison behind it would find nothing to write for them anyway.

use super::{PostgresConnector, quote_literal};
use crate::config::FeedSpec;
use crate::connectors::{ConnectorError, FeedRead, ReadSpec};
use crate::model::Key;
use std::collections::{HashMap, HashSet};

/// A relation as a `Relation` message describes it.
struct Relation {
    schema: String,
    table: String,
    columns: Vec<String>,
}

/// The keys of one transaction, kept until its commit says whose it was.
#[derive(Default)]
struct Transaction {
    keys: Vec<Key>,
    /// It changed more records than a cycle takes by key.
    overflowed: bool,
    origin: Option<String>,
    committed_at: Option<f64>,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl PostgresConnector {
    pub(super) fn read_feed(
        &mut self,
        spec: &ReadSpec,
        feed: &FeedSpec,
        limit: usize,
        max_retained_bytes: u64,
    ) -> Result<FeedRead, ConnectorError> {
        let mut read = FeedRead::default();
        // Taken before the slot is read: a change committed after it moves it.
        let wal: String = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .map_err(|e| self.query_err("read the server's WAL position", e))?
            .get(0);
        if let Some((quiet, retained)) = self.feed_quiet_at.get(&feed.slot)
            && *quiet == wal
        {
            read.retained_bytes = *retained;
            return Ok(read);
        }
        self.feed_quiet_at.remove(&feed.slot);
        if let Some(why) = self.ensure_slot(spec, feed, max_retained_bytes)? {
            read.restarted = Some(why);
        }
        read.retained_bytes = self.retained(feed)?.unwrap_or(0);
        let (schema, table) = super::super::sql::split_collection(&spec.collection);
        let schema = match schema {
            Some(s) => s.to_string(),
            None => self
                .client
                .query_one("SELECT current_schema()::text", &[])
                .map_err(|e| self.query_err("current_schema", e))?
                .get(0),
        };
        let key_kinds: Vec<super::PgKind> = {
            let cols = self.columns_of(&spec.collection)?;
            spec.key
                .iter()
                .map(|k| {
                    cols.iter()
                        .find(|c| &c.name == k)
                        .map_or(super::PgKind::Text, |c| c.kind)
                })
                .collect()
        };
        let mut relations: HashMap<u32, Relation> = HashMap::new();
        let mut txn = Transaction::default();
        let mut seen: HashSet<String> = HashSet::new();
        let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
        // Streamed, not collected: one transaction may hold millions of changes, and
        // only `limit` keys are ever kept (bounded memory, as every read).
        let context = format!(
            "system `{}`: read the change feed (slot `{}`)",
            self.name, feed.slot
        );
        let lost =
            |e: postgres::Error| ConnectorError::query(context.clone(), super::system_error(e));
        // The server counts messages (a transaction's begin and commit too): room for
        // `limit` one-row transactions, which stop the read at `limit` keys below.
        let messages = limit.saturating_mul(4).saturating_add(4);
        let limit_param = i32::try_from(messages).unwrap_or(i32::MAX);
        let mut delivered = 0usize;
        let params: [&(dyn postgres::types::ToSql + Sync); 3] =
            [&feed.slot, &limit_param, &feed.publication];
        let mut rows = self
            .client
            .query_raw(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, 'proto_version', '1', 'publication_names', $3)",
                params,
            )
            .map_err(&lost)?;
        use postgres::fallible_iterator::FallibleIterator;
        while let Some(row) = rows.next().map_err(&lost)? {
            delivered += 1;
            // The server stopped at its count: more may wait past what it sent.
            read.more |= delivered >= messages;
            let lsn: String = row.get(0);
            let data: &[u8] = row.get(1);
            let mut m = Message { data, at: 1 };
            let Some(&tag) = data.first() else { continue };
            let bad = |what: &str| ConnectorError::Query {
                context: context.clone(),
                source: format!(
                    "a message syncline cannot read ({what}, tag {:?}, at {lsn})",
                    tag as char
                )
                .into(),
            };
            match tag {
                b'B' => {
                    txn = Transaction::default();
                    m.skip(8).ok_or_else(|| bad("begin"))?;
                    let micros = m.i64().ok_or_else(|| bad("begin"))?;
                    txn.committed_at = Some((micros + PG_EPOCH_MICROS) as f64 / 1e6);
                }
                b'O' => {
                    m.skip(8).ok_or_else(|| bad("origin"))?;
                    txn.origin = Some(m.string().ok_or_else(|| bad("origin"))?);
                }
                b'R' => {
                    let oid = m.u32().ok_or_else(|| bad("relation"))?;
                    let relation = m.relation().ok_or_else(|| bad("relation"))?;
                    relations.insert(oid, relation);
                }
                b'I' | b'U' | b'D' => {
                    let oid = m.u32().ok_or_else(|| bad("row"))?;
                    let Some(rel) = relations.get(&oid) else {
                        return Err(bad("a row before its relation"));
                    };
                    if rel.table != table || rel.schema != schema {
                        continue;
                    }
                    // The last tuple of the message is the new row (insert, update) or the
                    // old key (delete); an update's old key comes first when its key changed.
                    let mut tuples = Vec::new();
                    while let Some(kind) = m.u8() {
                        let values = m.tuple().ok_or_else(|| bad("row"))?;
                        tuples.push((kind, values));
                    }
                    for (kind, values) in &tuples {
                        let sparse = *kind == b'K';
                        let mut key = Vec::with_capacity(spec.key.len());
                        for (name, pg_kind) in spec.key.iter().zip(&key_kinds) {
                            let at = rel.columns.iter().position(|c| c == name);
                            let value = at.and_then(|i| values.get(i).cloned().flatten());
                            match value {
                                Some(text) => key.push(pg_kind.parse(Some(text))),
                                None if sparse || tag == b'D' => {
                                    read.restarted.get_or_insert_with(|| format!(
                                        "a delete in `{}` did not carry the link's key `{name}` (key the link by the primary key, or ALTER TABLE … REPLICA IDENTITY FULL)",
                                        spec.collection
                                    ));
                                    break;
                                }
                                None => break,
                            }
                        }
                        if key.len() == spec.key.len() {
                            if read.keys.len() + txn.keys.len() < limit {
                                txn.keys.push(Key(key));
                            } else {
                                txn.overflowed = true;
                            }
                        }
                    }
                }
                b'T' => {
                    let n = m.u32().ok_or_else(|| bad("truncate"))?;
                    m.skip(1).ok_or_else(|| bad("truncate"))?;
                    for _ in 0..n {
                        let oid = m.u32().ok_or_else(|| bad("truncate"))?;
                        if relations
                            .get(&oid)
                            .is_none_or(|r| r.table == table && r.schema == schema)
                        {
                            read.restarted.get_or_insert_with(|| {
                                format!("`{}` was truncated", spec.collection)
                            });
                        }
                    }
                }
                b'C' => {
                    let done = std::mem::take(&mut txn);
                    read.upto = Some(lsn.clone());
                    if done.origin.as_deref() == Some(feed.slot.as_str()) {
                        read.own_writes += done.keys.len() as u64;
                        continue;
                    }
                    if done.overflowed {
                        // Too many to fetch by key: a full read covers them, and the feed
                        // is confirmed past this transaction.
                        read.restarted.get_or_insert_with(|| {
                            format!(
                                "a transaction changed more than {limit} records of `{}`: the link is read in full",
                                spec.collection
                            )
                        });
                        break;
                    }
                    if !done.keys.is_empty()
                        && let Some(at) = done.committed_at
                        && read.lag_seconds == 0.0
                    {
                        read.lag_seconds = (now - at).max(0.0);
                    }
                    for key in done.keys {
                        if seen.insert(key.encode()) {
                            read.keys.push(key);
                        }
                    }
                    if read.keys.len() >= limit {
                        // The rest waits for the next cycle, from this commit on.
                        read.more = true;
                        break;
                    }
                }
                // Types, messages and anything newer carry no rows of ours.
                _ => {}
            }
        }
        drop(rows);
        let quiet = read.upto.is_none() && read.restarted.is_none();
        if !read.more && read.restarted.is_none() {
            // Everything committed before `wal` was decoded above, and what is not among
            // the keys changed nothing of this collection: the feed may be confirmed that
            // far, so a slot on a quiet table does not hold back a busy server's WAL.
            let furthest = match read.upto.as_deref() {
                Some(seen) if lsn_value(seen) > lsn_value(&wal) => seen.to_string(),
                _ => wal.clone(),
            };
            read.upto = Some(furthest);
        }
        if quiet {
            self.feed_quiet_at
                .insert(feed.slot.clone(), (wal, read.retained_bytes));
        }
        Ok(read)
    }

    /// Makes the publication and the slot when missing; a slot that was invalidated or
    /// holds back more than `max_retained_bytes` is made again. Says why the feed
    /// restarted, if it did.
    fn ensure_slot(
        &mut self,
        spec: &ReadSpec,
        feed: &FeedSpec,
        max_retained_bytes: u64,
    ) -> Result<Option<String>, ConnectorError> {
        let publication: Option<i64> = self
            .client
            .query_opt(
                "SELECT 1::bigint FROM pg_publication WHERE pubname = $1",
                &[&feed.publication],
            )
            .map_err(|e| self.query_err("look for the change feed's publication", e))?
            .map(|r| r.get(0));
        if publication.is_none() {
            let table = super::super::sql::quote_collection(&spec.collection, '"');
            self.client
                .batch_execute(&format!(
                    "CREATE PUBLICATION {} FOR TABLE {table}",
                    super::quote(&feed.publication)
                ))
                .map_err(|e| {
                    self.query_err(&format!("create publication `{}`", feed.publication), e)
                })?;
        }
        let slot = self
            .client
            .query_opt(
                "SELECT COALESCE(wal_status, ''), (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, database = current_database(), plugin::text
                   FROM pg_replication_slots WHERE slot_name = $1",
                &[&feed.slot],
            )
            .map_err(|e| self.query_err("look for the change feed's slot", e))?;
        let why = match slot {
            None => Some(format!(
                "the change feed's slot `{}` did not exist (first use, or dropped): made now, and the link read in full",
                feed.slot
            )),
            Some(row) => {
                let status: String = row.get(0);
                let retained: Option<i64> = row.get(1);
                let here: bool = row.get(2);
                let plugin: Option<String> = row.get(3);
                if !here || plugin.as_deref() != Some("pgoutput") {
                    return Err(ConnectorError::Query {
                        context: format!("system `{}`: change feed", self.name),
                        source: format!(
                            "slot `{}` belongs to another database or another plugin than pgoutput; name another slot",
                            feed.slot
                        )
                        .into(),
                    });
                }
                let retained = retained.unwrap_or(0).max(0) as u64;
                if status == "lost" {
                    Some(format!(
                        "the change feed's slot `{}` was invalidated by the server (it held back more WAL than max_slot_wal_keep_size): made again, and the link read in full",
                        feed.slot
                    ))
                } else if retained > max_retained_bytes {
                    Some(format!(
                        "the change feed's slot `{}` held back {retained} bytes of WAL, more than max_feed_lag_bytes = {max_retained_bytes}: made again, and the link read in full",
                        feed.slot
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(why) = why {
            self.client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&feed.slot],
                )
                .map_err(|e| self.query_err(&format!("drop slot `{}`", feed.slot), e))?;
            self.client
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&feed.slot],
                )
                .map_err(|e| {
                    let hint = if e.to_string().contains("wal_level") {
                        " (the server needs wal_level = logical: ALTER SYSTEM SET wal_level = logical, then restart it)"
                    } else {
                        ""
                    };
                    ConnectorError::query(
                        format!(
                            "system `{}`: create replication slot `{}`{hint}",
                            self.name, feed.slot
                        ),
                        super::system_error(e),
                    )
                })?;
            return Ok(Some(why));
        }
        Ok(None)
    }

    pub(super) fn retained(&mut self, feed: &FeedSpec) -> Result<Option<u64>, ConnectorError> {
        let row = self
            .client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                &[&feed.slot],
            )
            .map_err(|e| self.query_err("read the change feed's slot", e))?;
        Ok(row.map(|r| r.get::<_, Option<i64>>(0).unwrap_or(0).max(0) as u64))
    }

    pub(super) fn confirm(&mut self, feed: &FeedSpec, upto: &str) -> Result<(), ConnectorError> {
        // Never backward: advancing to a position before the confirmed one is an error.
        self.client
            .execute(
                "SELECT pg_replication_slot_advance(slot_name, $2::text::pg_lsn) FROM pg_replication_slots
                  WHERE slot_name = $1 AND confirmed_flush_lsn < $2::text::pg_lsn",
                &[&feed.slot, &upto],
            )
            .map_err(|e| self.query_err(&format!("confirm the change feed (slot `{}`)", feed.slot), e))?;
        Ok(())
    }

    pub(super) fn mark_origin(&mut self, origin: &str) -> Result<bool, ConnectorError> {
        if self.origin.as_deref() == Some(origin) {
            return Ok(true);
        }
        let setup = format!(
            "SELECT pg_replication_origin_create({o}) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = {o});
             SELECT pg_replication_origin_session_setup({o});",
            o = quote_literal(origin)
        );
        match self.client.batch_execute(&setup) {
            Ok(()) => {
                self.origin = Some(origin.to_string());
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(
                    system = %self.name,
                    "cannot mark syncline's writes with replication origin `{origin}` ({}); the change feed reads them back and the three-way comparison finds nothing to write",
                    super::db_message(&e)
                );
                Ok(false)
            }
        }
    }
}

/// A WAL position (`16/B374D848`) as a number, to compare two; 0 for a text that is none.
fn lsn_value(lsn: &str) -> u64 {
    lsn.split_once('/')
        .and_then(|(hi, lo)| {
            Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
        })
        .unwrap_or(0)
}

/// A cursor over one pgoutput message.
struct Message<'a> {
    data: &'a [u8],
    at: usize,
}

impl Message<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let bytes = self.data.get(self.at..self.at + n)?;
        self.at += n;
        Some(bytes)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn string(&mut self) -> Option<String> {
        let rest = self.data.get(self.at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Some(text)
    }
    fn relation(&mut self) -> Option<Relation> {
        let schema = self.string()?;
        let table = self.string()?;
        self.skip(1)?;
        let n = self.u16()?;
        let mut columns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            self.skip(1)?;
            columns.push(self.string()?);
            self.skip(8)?;
        }
        Some(Relation {
            schema,
            table,
            columns,
        })
    }
    /// A tuple's columns as text; `None` for NULL or an unchanged TOASTed value.
    fn tuple(&mut self) -> Option<Vec<Option<String>>> {
        let n = self.u16()?;
        let mut values = Vec::with_capacity(n as usize);
        for _ in 0..n {
            match self.u8()? {
                b't' | b'b' => {
                    let len = self.u32()? as usize;
                    values.push(Some(String::from_utf8_lossy(self.take(len)?).into_owned()));
                }
                _ => values.push(None),
            }
        }
        Some(values)
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn wal_positions_compare_as_numbers() {
        assert!(super::lsn_value("1/29F118") > super::lsn_value("0/FFFFFFFF"));
        assert!(super::lsn_value("16/B374D848") > super::lsn_value("16/B374D7FF"));
        assert_eq!(super::lsn_value("nonsense"), 0);
    }

    #[test]
    fn a_relation_and_a_tuple_read_back() {
        let mut data = vec![b'R'];
        data.extend(7u32.to_be_bytes());
        data.extend(b"public\0people\0d");
        data.extend(2u16.to_be_bytes());
        for (flag, name) in [(1u8, "id"), (0, "name")] {
            data.push(flag);
            data.extend(name.as_bytes());
            data.push(0);
            data.extend(23u32.to_be_bytes());
            data.extend((-1i32).to_be_bytes());
        }
        let mut m = Message { data: &data, at: 1 };
        assert_eq!(m.u32(), Some(7));
        let r = m.relation().unwrap();
        assert_eq!((r.schema.as_str(), r.table.as_str()), ("public", "people"));
        assert_eq!(r.columns, ["id", "name"]);

        let mut t = vec![b'N'];
        t.extend(3u16.to_be_bytes());
        t.push(b't');
        t.extend(2u32.to_be_bytes());
        t.extend(b"42");
        t.push(b'n');
        t.push(b'u');
        let mut m = Message { data: &t, at: 0 };
        assert_eq!(m.u8(), Some(b'N'));
        assert_eq!(m.tuple().unwrap(), [Some("42".to_string()), None, None]);
        // A message cut short is an error, not a panic.
        let mut m = Message {
            data: &t[..6],
            at: 1,
        };
        assert_eq!(m.tuple(), None);
    }
}
