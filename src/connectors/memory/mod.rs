//! `memory`: collections held in this process, by store name — for tests and for
//! embedding syncline in a program that holds its records itself.
//!
//! It declares a weaker contract than the SQL kinds, as a REST API or a file will: its
//! listings are paged without a snapshot, its batches are not atomic, and it has no
//! read-back; a store is created with the rest of its [`Capabilities`] (writes
//! conditional by version, by values, or not at all; a change feed). It keeps a version
//! per record and a change log. Faults can be injected ([`inject`]): a batch that fails
//! part-way, writes whose outcome is unknown. So it drives the engine through the paths
//! that are not SQL's.

mod settings;
pub use settings::Settings;

use super::{
    BatchResult, Capabilities, Changes, ColumnInfo, Conditional, Connector, ConnectorError, Cursor,
    ReadSpec, Write, WriteOutcome,
};
use crate::model::{Key, Record, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex};

/// A fault the next `apply` on a store suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The writes are made, but the answer is lost: every outcome is unknown.
    AnswerLost,
    /// The batch fails after this many writes were made (the batch is not atomic).
    FailAfter(usize),
    /// The next scan does not deliver its n-th record (from 0): a listing without a
    /// snapshot whose pages shifted under it.
    ListingMisses(usize),
}

struct Row {
    values: BTreeMap<String, Value>,
    version: i64,
}

#[derive(Default)]
struct Collection {
    /// Column name, whether it is (part of) the key.
    columns: Vec<(String, bool)>,
    /// By encoded key (which sorts as the key does).
    rows: BTreeMap<String, Row>,
    /// (sequence, encoded key) of every change, in order.
    log: Vec<(u64, String)>,
    next_id: i64,
}

struct Store {
    capabilities: Capabilities,
    collections: HashMap<String, Collection>,
    faults: Vec<Fault>,
    seq: u64,
}

type Shared = Arc<Mutex<Store>>;

static STORES: LazyLock<Mutex<HashMap<String, Shared>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn store(name: &str) -> Option<Shared> {
    STORES.lock().expect("memory stores").get(name).cloned()
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Creates (or empties) store `name` with these capabilities; `snapshot`, `atomic_batch`
/// and `read_back` are always false here, whatever is asked.
pub fn create(name: &str, capabilities: Capabilities) {
    let capabilities = Capabilities {
        snapshot: false,
        atomic_batch: false,
        read_back: false,
        ..capabilities
    };
    STORES.lock().expect("memory stores").insert(
        name.to_string(),
        Arc::new(Mutex::new(Store {
            capabilities,
            collections: HashMap::new(),
            faults: Vec::new(),
            seq: 0,
        })),
    );
}

/// Adds an empty collection; `key` names its key columns (an integer key left out of a
/// create is assigned).
pub fn create_collection(name: &str, collection: &str, columns: &[&str], key: &[&str]) {
    let s = store(name).expect("store created");
    lock(&s).collections.insert(
        collection.to_string(),
        Collection {
            columns: columns
                .iter()
                .map(|c| (c.to_string(), key.contains(c)))
                .collect(),
            next_id: 1,
            ..Default::default()
        },
    );
}

/// Inserts or replaces a record, as a person editing the system would.
pub fn put(name: &str, collection: &str, values: &[(&str, Value)]) {
    let s = store(name).expect("store created");
    let mut st = lock(&s);
    st.seq += 1;
    let seq = st.seq;
    let c = st.collections.get_mut(collection).expect("collection");
    let values: BTreeMap<String, Value> = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let key = c.key_of(&values).expect("the key is given").encode();
    let version = c.rows.get(&key).map_or(1, |r| r.version + 1);
    c.rows.insert(key.clone(), Row { values, version });
    c.log.push((seq, key));
}

/// Deletes a record by its key values.
pub fn delete(name: &str, collection: &str, key: &[Value]) {
    let s = store(name).expect("store created");
    let mut st = lock(&s);
    st.seq += 1;
    let seq = st.seq;
    let c = st.collections.get_mut(collection).expect("collection");
    let k = Key(key.to_vec()).encode();
    if c.rows.remove(&k).is_some() {
        c.log.push((seq, k));
    }
}

/// Every record, in key order, as column → value.
pub fn rows(name: &str, collection: &str) -> Vec<BTreeMap<String, Value>> {
    let s = store(name).expect("store created");
    let st = lock(&s);
    st.collections[collection]
        .rows
        .values()
        .map(|r| r.values.clone())
        .collect()
}

/// The next `apply` on store `name` suffers `fault`.
pub fn inject(name: &str, fault: Fault) {
    let s = store(name).expect("store created");
    lock(&s).faults.push(fault);
}

impl Collection {
    fn key_columns(&self) -> impl Iterator<Item = &str> {
        self.columns
            .iter()
            .filter(|(_, k)| *k)
            .map(|(c, _)| c.as_str())
    }

    fn key_of(&self, values: &BTreeMap<String, Value>) -> Option<Key> {
        self.key_columns()
            .map(|c| values.get(c).cloned().filter(|v| *v != Value::Null))
            .collect::<Option<Vec<_>>>()
            .map(Key)
    }

    fn record(&self, spec: &ReadSpec, row: &Row) -> Record {
        let get = |c: &String| row.values.get(c).cloned().unwrap_or(Value::Null);
        let mut r = Record::new(
            Key(spec.key.iter().map(get).collect()),
            spec.columns.iter().map(get).collect(),
        );
        r.version = Some(Value::Integer(row.version));
        r
    }

    /// Whether `row` still holds what the write expects, under `conditional`.
    fn holds(
        conditional: Conditional,
        row: &Row,
        expect: &[(crate::model::Name, Value)],
        version: Option<&Value>,
    ) -> bool {
        let by_values = || {
            expect.iter().all(|(c, v)| {
                row.values
                    .get(&**c)
                    .map_or(*v == Value::Null, |held| held == v)
            })
        };
        match conditional {
            Conditional::None => true,
            Conditional::Values => by_values(),
            Conditional::Version => match version {
                Some(v) => *v == Value::Integer(row.version),
                None => by_values(),
            },
        }
    }
}

/// A `memory` system: store `name` (see [`create`]).
pub struct MemoryConnector {
    name: String,
    store: Shared,
}

impl MemoryConnector {
    /// # Errors
    /// No store of that name was created in this process.
    pub fn open(name: &str) -> Result<MemoryConnector, ConnectorError> {
        let store = store(name).ok_or_else(|| ConnectorError::Open {
            target: format!("memory store `{name}`"),
            source: "no such store in this process (memory systems are created by the program that embeds syncline)".into(),
        })?;
        Ok(MemoryConnector {
            name: name.to_string(),
            store,
        })
    }

    fn with<T>(
        &self,
        collection: &str,
        f: impl FnOnce(&mut Collection, &mut u64, Capabilities) -> T,
    ) -> Result<T, ConnectorError> {
        let mut st = lock(&self.store);
        let caps = st.capabilities;
        let Store {
            collections, seq, ..
        } = &mut *st;
        let c = collections
            .get_mut(collection)
            .ok_or_else(|| ConnectorError::NoCollection(collection.to_string()))?;
        Ok(f(c, seq, caps))
    }
}

impl Connector for MemoryConnector {
    fn capabilities(&self) -> Capabilities {
        lock(&self.store).capabilities
    }

    fn identity(&mut self) -> Result<String, ConnectorError> {
        Ok(format!("memory:{}", self.name))
    }

    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError> {
        self.with(collection, |c, _, _| {
            let single_key = c.key_columns().count() == 1;
            c.columns
                .iter()
                .map(|(name, key)| ColumnInfo {
                    name: name.clone(),
                    declared_type: "any".into(),
                    not_null: *key,
                    primary_key: *key,
                    unique: *key && single_key,
                    has_default: *key,
                })
                .collect()
        })
    }

    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError> {
        // Page by page, the store unlocked in between: no snapshot, as over a REST API.
        let mut after: Option<String> = None;
        let mut count = 0;
        let mut missed = {
            let mut st = lock(&self.store);
            let at = st
                .faults
                .iter()
                .position(|f| matches!(f, Fault::ListingMisses(_)));
            at.map(|i| match st.faults.remove(i) {
                Fault::ListingMisses(n) => n,
                _ => unreachable!(),
            })
        };
        loop {
            let page = self.with(&spec.collection, |c, _, _| {
                let range = match &after {
                    Some(k) => c
                        .rows
                        .range::<String, _>((
                            std::ops::Bound::Excluded(k),
                            std::ops::Bound::Unbounded,
                        ))
                        .take(batch_size)
                        .collect::<Vec<_>>(),
                    None => c.rows.iter().take(batch_size).collect(),
                };
                // A cursor read still pages by key; the pages just hold fewer records.
                let in_range = |key: &String| {
                    spec.range.as_ref().is_none_or(|r| {
                        r.from.as_ref().is_none_or(|f| *key >= f.encode())
                            && r.to.as_ref().is_none_or(|t| *key < t.encode())
                    })
                };
                let at_or_past = |row: &Row| {
                    spec.since.as_ref().is_none_or(|s| {
                        row.values
                            .get(&s.column)
                            .and_then(|v| v.cursor_cmp(&s.value))
                            .is_some_and(|o| o.is_ge())
                    })
                };
                let last = range.last().map(|(k, _)| (*k).clone());
                let records = range
                    .into_iter()
                    .filter(|(k, row)| in_range(k) && at_or_past(row))
                    .map(|(k, row)| (k.clone(), c.record(spec, row)))
                    .collect::<Vec<_>>();
                (last, records)
            })?;
            let (last, page) = page;
            let Some(last) = last else {
                return Ok(count);
            };
            after = Some(last);
            let mut records: Vec<Record> = page.into_iter().map(|(_, r)| r).collect();
            if let Some(n) = missed {
                if n < records.len() {
                    records.remove(n);
                    missed = None;
                } else {
                    missed = Some(n - records.len());
                }
            }
            count += records.len() as u64;
            consumer(records).map_err(|e| ConnectorError::Consumer(Box::new(e)))?;
        }
    }

    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError> {
        self.with(&spec.collection, |c, _, _| c.rows.is_empty())
    }

    fn count(&mut self, spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        self.with(&spec.collection, |c, _, _| Some(c.rows.len() as u64))
    }

    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError> {
        self.with(&spec.collection, |c, _, _| {
            keys.iter()
                .filter_map(|k| c.rows.get(&k.encode()).map(|row| c.record(spec, row)))
                .collect()
        })
    }

    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError> {
        let fault = {
            let mut st = lock(&self.store);
            let at = st
                .faults
                .iter()
                .position(|f| !matches!(f, Fault::ListingMisses(_)));
            at.map(|i| st.faults.remove(i))
        };
        self.with(&spec.collection, |c, seq, caps| {
            let mut out = BatchResult::default();
            for (n, w) in writes.iter().enumerate() {
                if fault == Some(Fault::FailAfter(n)) {
                    return Err(ConnectorError::Query {
                        context: "memory apply".into(),
                        source: format!("injected failure after {n} writes").into(),
                    });
                }
                *seq += 1;
                let outcome = match w {
                    Write::Create { values } => {
                        let mut row: BTreeMap<String, Value> = values
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.clone()))
                            .collect();
                        if c.key_of(&row).is_none() {
                            // An integer key the system assigns.
                            let id = c.next_id;
                            for k in c.key_columns().map(str::to_string).collect::<Vec<_>>() {
                                row.insert(k, Value::Integer(id));
                            }
                        }
                        let key = c.key_of(&row).expect("key set");
                        if let Value::Integer(i) = key.0[0] {
                            c.next_id = c.next_id.max(i + 1);
                        }
                        let encoded = key.encode();
                        if c.rows.contains_key(&encoded) {
                            WriteOutcome::Rejected(format!("key {key} exists"))
                        } else {
                            c.rows.insert(
                                encoded.clone(),
                                Row {
                                    values: row,
                                    version: 1,
                                },
                            );
                            c.log.push((*seq, encoded));
                            WriteOutcome::Created(key)
                        }
                    }
                    Write::Update {
                        key,
                        expect,
                        version,
                        ..
                    }
                    | Write::Delete {
                        key,
                        expect,
                        version,
                    } => {
                        let encoded = key.encode();
                        let holds = c.rows.get(&encoded).is_some_and(|row| {
                            Collection::holds(caps.conditional, row, expect, version.as_ref())
                        });
                        if holds {
                            match w {
                                Write::Update { set, .. } => {
                                    let row = c.rows.get_mut(&encoded).expect("held");
                                    for (col, v) in set {
                                        row.values.insert(col.to_string(), v.clone());
                                    }
                                    row.version += 1;
                                }
                                _ => {
                                    c.rows.remove(&encoded);
                                }
                            }
                            c.log.push((*seq, encoded));
                            WriteOutcome::Applied
                        } else {
                            WriteOutcome::Stale
                        }
                    }
                };
                out.outcomes.push(match fault {
                    Some(Fault::AnswerLost) => {
                        WriteOutcome::Unknown("the answer was lost (injected)".into())
                    }
                    _ => outcome,
                });
                out.stored.push(None);
            }
            Ok(out)
        })?
    }

    fn digests(
        &mut self,
        spec: &ReadSpec,
        bounds: &[Key],
    ) -> Result<Vec<super::RangeDigest>, ConnectorError> {
        // Encoded keys sort as keys do: a key's range is found among the encoded bounds.
        let bounds: Vec<String> = bounds.iter().map(Key::encode).collect();
        self.with(&spec.collection, |c, _, _| {
            let mut sums = vec![(0u64, 0u64); bounds.len() + 1];
            for (key, row) in &c.rows {
                let range = bounds.partition_point(|b| b <= key);
                let record = c.record(spec, row);
                let text = format!("{key}\u{1f}{:?}", record.values);
                let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                sums[range].0 += 1;
                sums[range].1 = sums[range].1.wrapping_add(hash & 0x7fff_ffff);
            }
            sums.into_iter()
                .map(|(rows, sum)| super::RangeDigest {
                    rows,
                    digest: if rows == 0 {
                        "0".into()
                    } else {
                        sum.to_string()
                    },
                })
                .collect()
        })
    }

    fn changes(
        &mut self,
        spec: &ReadSpec,
        since: Option<&Cursor>,
        limit: usize,
    ) -> Result<Changes, ConnectorError> {
        if !self.capabilities().change_feed {
            return Err(ConnectorError::Unsupported("a change feed"));
        }
        let from: u64 = match since {
            Some(c) => c.0.parse().map_err(|_| ConnectorError::Query {
                context: "memory changes".into(),
                source: format!("not a cursor of this store: {:?}", c.0).into(),
            })?,
            None => 0,
        };
        self.with(&spec.collection, |c, _, _| {
            let mut out = Changes::default();
            let mut seen = std::collections::HashSet::new();
            let mut last = from;
            for (seq, key) in c.log.iter().filter(|(s, _)| *s > from) {
                if out.upserted.len() + out.deleted.len() >= limit {
                    break;
                }
                last = *seq;
                if !seen.insert(key.clone()) {
                    continue;
                }
                match c.rows.get(key) {
                    Some(row) => out.upserted.push(c.record(spec, row)),
                    None => out.deleted.push(Key::decode(key).expect("keys encode")),
                }
            }
            out.cursor = Some(Cursor(last.to_string()));
            out
        })
    }
}
