//! Reading ahead: a collection is scanned on its own thread while the cycle works on the
//! batch before, so waiting for the system overlaps with planning and writing.

use crate::Error;
use crate::connectors::{Connector, ConnectorError, ReadSpec};
use crate::model::{Key, Record, Value};
use std::sync::mpsc;

/// Batches read but not yet consumed: bounds memory at a few batches.
const BATCHES_AHEAD: usize = 2;

/// A record kept out of the cycle and quarantined: its key cannot name it (NULL, or
/// shared with other records of the scan: a table without a primary key, a view), or it
/// holds a value that would arrive altered (see `Record::defect`). Paired by a key that
/// names several records, a run would write one record's values onto another's, and
/// flap between them every run.
#[derive(Debug, Clone)]
pub(crate) struct BadKey {
    pub key: Key,
    pub why: String,
    /// `BadKey` or `BadValue`.
    pub kind: crate::state::QuarantineKind,
}

impl BadKey {
    fn null(key: Key) -> BadKey {
        BadKey {
            key,
            why: "its key is NULL, so it cannot be told apart or found again; give it a key".into(),
            kind: crate::state::QuarantineKind::BadKey,
        }
    }

    fn repeated(key: Key, records: usize) -> BadKey {
        BadKey {
            key,
            why: format!(
                "its key is shared by {records} records, so syncline cannot tell which one it is linked to; make the key unique (a primary key or unique index)"
            ),
            kind: crate::state::QuarantineKind::BadKey,
        }
    }

    /// A record that cannot be synced as read (see `Record::defect`), or `None`.
    fn defect(record: &mut Record) -> Option<BadKey> {
        let why = record.defect.take()?;
        Some(BadKey {
            key: record.key.clone(),
            why,
            kind: crate::state::QuarantineKind::BadValue,
        })
    }
}

/// Fetched records by encoded key, those whose key repeats among them or that cannot be
/// synced as read kept out (as a scan keeps them out): a partner fetched twice by one
/// key cannot tell which record is the pair's.
pub(crate) fn sort_out_fetched(
    records: Vec<Record>,
) -> (std::collections::HashMap<String, Record>, Vec<BadKey>) {
    use std::collections::HashMap;
    let mut by_key: HashMap<String, Record> = HashMap::with_capacity(records.len());
    let mut repeats: HashMap<String, usize> = HashMap::new();
    let mut bad = Vec::new();
    for mut record in records {
        if let Some(b) = BadKey::defect(&mut record) {
            bad.push(b);
            continue;
        }
        let key = record.key.encode();
        match by_key.entry(key) {
            std::collections::hash_map::Entry::Occupied(taken) => {
                *repeats.entry(taken.key().clone()).or_insert(1) += 1;
            }
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(record);
            }
        }
    }
    for (key, n) in repeats {
        if let Some(record) = by_key.remove(&key) {
            bad.push(BadKey::repeated(record.key, n));
        }
    }
    (by_key, bad)
}

/// Keeps records with a NULL or repeated key out of a scan. A scan delivers keys in
/// order, so repeats are neighbours; the last record of each batch is held back until the
/// next one shows whether its key repeats across the boundary.
#[derive(Default)]
struct KeyGuard {
    held: Option<Record>,
    repeats: usize,
    bad: Vec<BadKey>,
}

impl KeyGuard {
    /// The records of a batch that can be handed over: first, the one held back from
    /// the batch before if this one showed it does not repeat; then this batch's but
    /// its last, which is held back in turn.
    fn admit(&mut self, records: Vec<Record>) -> (Option<Record>, Vec<Record>) {
        let mut carrying = self.held.is_some();
        let mut carried = Vec::new();
        let mut out = Vec::with_capacity(records.len());
        for mut record in records {
            if record.key.0.iter().any(|v| matches!(v, Value::Null)) {
                self.bad.push(BadKey::null(record.key));
                continue;
            }
            if let Some(bad) = BadKey::defect(&mut record) {
                self.bad.push(bad);
                continue;
            }
            if self
                .held
                .as_ref()
                .is_some_and(|h| same_key(&h.key, &record.key))
            {
                self.repeats += 1;
                continue;
            }
            if std::mem::take(&mut carrying) {
                self.release(&mut carried);
            } else {
                self.release(&mut out);
            }
            self.held = Some(record);
        }
        (carried.pop(), out)
    }

    fn release(&mut self, out: &mut Vec<Record>) {
        let Some(record) = self.held.take() else {
            return;
        };
        if self.repeats == 0 {
            out.push(record);
            return;
        }
        self.bad
            .push(BadKey::repeated(record.key, self.repeats + 1));
        self.repeats = 0;
    }

    /// Hands `records` and the records kept out so far to `consume`, unless both are
    /// empty.
    fn hand_over(
        &mut self,
        records: Vec<Record>,
        consume: &mut dyn FnMut(Vec<Record>, Vec<BadKey>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if records.is_empty() && self.bad.is_empty() {
            return Ok(());
        }
        consume(records, std::mem::take(&mut self.bad))
    }

    fn finish(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        self.release(&mut out);
        out
    }
}

/// The same key exactly, as the id map tells keys apart (by their encoding): `1` and
/// `'1'` are two keys in a SQLite column without a type.
fn same_key(a: &Key, b: &Key) -> bool {
    a.0.len() == b.0.len()
        && a.0.iter().zip(&b.0).all(|(x, y)| {
            std::mem::discriminant(x) == std::mem::discriminant(y)
                && match (x, y) {
                    (Value::Real(p), Value::Real(q)) => p.to_bits() == q.to_bits(),
                    _ => x == y,
                }
        })
}

/// Streams `connector`'s scan of `spec` into `consume`, reading ahead on a scoped
/// thread: each batch's records, and apart from them those kept out (see [`BadKey`]),
/// handed over with their batch so that memory holds a batch of them at most. Returns
/// the number of records read. A failure of `consume` stops the scan and is the error
/// returned; a failed scan is returned as the connector's error.
pub(crate) fn scan_ahead(
    connector: &mut dyn Connector,
    spec: &ReadSpec,
    batch_size: usize,
    consume: &mut dyn FnMut(Vec<Record>, Vec<BadKey>) -> Result<(), Error>,
) -> Result<u64, Error> {
    let mut guard = KeyGuard::default();
    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel::<Vec<Record>>(BATCHES_AHEAD);
        let reader = scope.spawn(move || {
            connector.scan(spec, batch_size, &mut |records| {
                // The receiver is gone only when `consume` failed; its error is the one
                // reported, so this one only needs to stop the scan.
                let sent = sender.send(records).map_err(|_| Error::Stopped);
                super::one_behind::batch_done();
                sent
            })
        });
        // A batch is handed over once the next one is read: the record the guard held
        // back from its end then joins it, instead of ending the scan as a batch of
        // one (on a cursor read, one more fetch and write round trip after the rest).
        let mut pending: Vec<Record> = Vec::new();
        let consumed = receiver
            .iter()
            .try_for_each(|records| {
                let (carried, records) = guard.admit(records);
                pending.extend(carried);
                let consumed = if records.is_empty() {
                    Ok(())
                } else {
                    let ready = std::mem::replace(&mut pending, records);
                    guard.hand_over(ready, consume)
                };
                super::one_behind::batch_done();
                consumed
            })
            .and_then(|()| {
                pending.extend(guard.finish());
                guard.hand_over(std::mem::take(&mut pending), consume)
            });
        // Unblocks a reader waiting to hand over a batch after `consume` failed.
        drop(receiver);
        let scanned = match reader.join() {
            Ok(scanned) => scanned,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        consumed?;
        scanned.map_err(|e| match e {
            ConnectorError::Consumer(inner) => *inner,
            other => Error::Connector(other),
        })
    })
}
