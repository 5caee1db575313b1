//! Connectors: one module per system kind behind the [`Connector`] trait.
//!
//! The engine never speaks SQL (or HTTP) itself. It asks a connector to stream a
//! collection in key order, to fetch records by key, and to apply a batch of conditional
//! writes. Each connector owns the mapping between its system's types and [`Value`].

pub mod file;
pub mod http;
pub mod kinds;
pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use crate::model::{Key, Name, Record, Value};
pub use kinds::{Kind, SystemSpec};

/// What to read from a collection: its key columns first, then `columns`, in order.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub collection: String,
    pub key: Vec<String>,
    pub columns: Vec<String>,
    /// For [`scan`](Connector::scan): only the records whose `column` is at or past a
    /// value (a cursor read). `None` reads every record.
    pub since: Option<Since>,
    /// For [`scan`](Connector::scan): only the records whose key is in this range.
    pub range: Option<KeyRange>,
}

/// `from <= key < to`, in the order the system scans keys in; an open end is `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyRange {
    pub from: Option<Key>,
    pub to: Option<Key>,
}

/// What a system says a key range holds: how many records, and an order-independent
/// hash of their keys and columns that the system computes itself (see
/// [`Connector::digests`]). Two digests of a range are equal when nothing in it changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeDigest {
    pub rows: u64,
    pub digest: String,
}

/// `column >= value`: the records a cursor read takes. A record whose column is NULL is
/// not among them (it is read by the next full read).
#[derive(Debug, Clone, PartialEq)]
pub struct Since {
    pub column: String,
    pub value: Value,
}

/// A column as the system describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub declared_type: String,
    pub not_null: bool,
    pub primary_key: bool,
    /// A single-column unique index or constraint (a primary key of one column counts).
    pub unique: bool,
    /// The system fills it when an insert leaves it out: a default, an identity or
    /// auto-increment, a generated column, SQLite's rowid.
    pub has_default: bool,
}

/// One write. Updates and deletes are conditional: `expect` holds the values read for
/// those columns, and the write only happens if the row still holds them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Write {
    Create {
        values: Vec<(Name, Value)>,
    },
    Update {
        key: Key,
        set: Vec<(Name, Value)>,
        expect: Vec<(Name, Value)>,
        /// The record's version as read, for a system that makes writes conditional by
        /// version ([`Conditional::Version`]); `None` elsewhere.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<Value>,
    },
    Delete {
        key: Key,
        expect: Vec<(Name, Value)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<Value>,
    },
}

/// What happened to one write of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// A create; the system's key for the new record.
    Created(Key),
    /// An update or delete that took effect.
    Applied,
    /// The row changed (or vanished) after it was read: nothing was written. The engine
    /// re-plans it next run.
    Stale,
    /// The system refused this record's write (a constraint, a type it cannot hold). The
    /// rest of the batch is unaffected; the engine quarantines the record with `reason`.
    Rejected(String),
    /// Sent, but whether it took effect is not known (a timeout after sending). The
    /// engine resolves an update or delete by fetching the record; a create is left to
    /// the next run, which finds it by the link's create identity if it landed.
    Unknown(String),
}

/// What a system said of a batch: an outcome per write and, for each write that took
/// effect (a create that landed, an update that applied), the record as the system
/// stored it, read back inside the batch's transaction (so no other writer can have
/// touched it in between). That is what a trigger, a column default, a rounding column
/// or the system's own representation made of the values sent: the engine remembers it
/// as that side's base, so the next read of that side compares against what the system
/// holds, not against what syncline sent (no echo, no ping-pong).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchResult {
    pub outcomes: Vec<WriteOutcome>,
    /// By write; `None` for deletes, refusals and stale writes, and where the system
    /// knows the write is stored exactly as sent.
    pub stored: Vec<Option<Record>>,
}

/// The key of the record a write left behind: a create's new key, an applied update's
/// key; `None` for deletes, refusals and stale writes (nothing to read back).
fn written_key<'a>(write: &'a Write, outcome: &'a WriteOutcome) -> Option<&'a Key> {
    match (write, outcome) {
        (Write::Create { .. }, WriteOutcome::Created(k)) => Some(k),
        (Write::Update { key, .. }, WriteOutcome::Applied) => Some(key),
        _ => None,
    }
}

impl BatchResult {
    /// The result of a batch of which a wrapper decided some writes itself (`decided`,
    /// by write) and sent only the others, whose outcomes and read-backs are `sent`, in
    /// order: every outcome put back in its write's place.
    pub(crate) fn merged(
        decided: Vec<Option<WriteOutcome>>,
        sent: impl IntoIterator<Item = (WriteOutcome, Option<Record>)>,
    ) -> BatchResult {
        let mut sent = sent.into_iter();
        let mut out = BatchResult::default();
        for d in decided {
            let (outcome, stored) = match d {
                Some(outcome) => (outcome, None),
                None => sent.next().expect("one outcome per write sent"),
            };
            out.outcomes.push(outcome);
            out.stored.push(stored);
        }
        out
    }

    /// The keys a batch's read-back fetches: those of each create that landed and each
    /// update that applied.
    pub(crate) fn written_keys(writes: &[Write], outcomes: &[WriteOutcome]) -> Vec<Key> {
        Self::written_keys_where(writes, outcomes, |_| true)
    }

    /// [`written_keys`](Self::written_keys) of the writes `read_back` picks: a connector
    /// that knows a write was stored exactly as sent leaves it out (its `stored` is then
    /// `None`, which the engine takes for "as sent").
    pub(crate) fn written_keys_where(
        writes: &[Write],
        outcomes: &[WriteOutcome],
        read_back: impl Fn(&Write) -> bool,
    ) -> Vec<Key> {
        writes
            .iter()
            .zip(outcomes)
            .filter(|(w, _)| read_back(w))
            .filter_map(|(w, o)| written_key(w, o).cloned())
            .collect()
    }

    /// The outcomes with the records read back for [`written_keys`](Self::written_keys),
    /// put in write order.
    pub(crate) fn with_stored(
        writes: &[Write],
        outcomes: Vec<WriteOutcome>,
        records: Vec<Record>,
    ) -> BatchResult {
        let mut by_key: std::collections::HashMap<String, Record> =
            records.into_iter().map(|r| (r.key.encode(), r)).collect();
        let stored = writes
            .iter()
            .zip(&outcomes)
            .map(|(w, o)| by_key.remove(&written_key(w, o)?.encode()))
            .collect();
        BatchResult { outcomes, stored }
    }
}

/// A failure of the connector itself (not of one record).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("cannot open {target}: {source}")]
    Open {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("collection `{0}` does not exist")]
    NoCollection(String),
    #[error("{context}: {source}")]
    Query {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The consumer of a scan failed; the scan stopped.
    #[error(transparent)]
    Consumer(Box<crate::Error>),
    /// The system does not offer this (see [`Capabilities`]).
    #[error("{0} is not supported by this kind of system")]
    Unsupported(&'static str),
    /// The connection to the system was lost (dropped, terminated by the server): the
    /// engine may run the link again on a new connection.
    #[error("{context}: {source}")]
    Lost {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConnectorError {
    /// A query error, or [`ConnectorError::Lost`] when the system's error says the
    /// connection went.
    pub(crate) fn query(context: String, error: SystemError) -> ConnectorError {
        if error.failure == Failure::Lost {
            ConnectorError::Lost {
                context,
                source: Box::new(error),
            }
        } else {
            ConnectorError::Query {
                context,
                source: Box::new(error),
            }
        }
    }
}

/// What a system's failure means for trying again. Each kind classifies its driver's
/// errors once, and the retry policies (a batch's in the SQL layer, a link's in the
/// engine) decide from this, never from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection went (dropped, ended by the server): a new one may succeed.
    Lost,
    /// The system refused for now (a serialization failure, a deadlock, a lock wait
    /// that timed out): the same work may succeed when tried again.
    Transient,
    /// Anything else: trying again would fail the same way.
    Other,
}

/// A system's own error: the sentence syncline shows, what it means for trying again,
/// and the driver's error kept as its source.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", if *.failure == Failure::Lost { "the connection was lost: " } else { "" })]
pub struct SystemError {
    pub message: String,
    pub failure: Failure,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SystemError {
    /// A driver's error, classified by what the kind knows of it: the connection went
    /// (`lost`), or it may pass (`transient`), or neither.
    pub(crate) fn classified<E>(
        message: String,
        lost: bool,
        transient: bool,
        source: E,
    ) -> SystemError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let failure = if lost {
            Failure::Lost
        } else if transient {
            Failure::Transient
        } else {
            Failure::Other
        };
        SystemError::new(message, failure, source)
    }

    pub(crate) fn new<E>(message: String, failure: Failure, source: E) -> SystemError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        SystemError {
            message,
            failure,
            source: Some(Box::new(source)),
        }
    }
}

/// What a kind of system can promise. The engine relies on the strongest form of each
/// (what SQL databases give, [`Capabilities::SQL`]) and adapts where a kind declares less
/// (see `engine::adapt`):
/// - no **snapshot**: a record missing from a listing is confirmed gone by a fetch before
///   any delete rule sees it (a page that shifted is not a delete);
/// - no **conditional writes**: the engine re-reads each record just before writing it
///   and skips the write if it changed; a window remains, and `check` says the link is
///   exposed to lost updates;
/// - **conditional by version**: writes carry the version the record was read at;
/// - no **read-back** in the write: the engine fetches what was stored after the batch;
/// - a write whose outcome is unknown is resolved by a fetch (see [`WriteOutcome::Unknown`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `scan` delivers records in ascending key order. The engine finds a key that
    /// repeats as neighbours in a scan; a kind that cannot order must keep keys unique.
    pub ordered_scan: bool,
    /// `scan` reads one consistent snapshot: a record it does not deliver is gone.
    pub snapshot: bool,
    /// `apply` writes a batch all or nothing when it fails.
    pub atomic_batch: bool,
    /// How updates and deletes are made conditional on what was read.
    pub conditional: Conditional,
    /// `apply` reads each write that took effect back, in its transaction.
    pub read_back: bool,
    /// `changes` is offered.
    pub change_feed: bool,
}

/// How a system makes a write conditional on the record as it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditional {
    /// By the values read (`expect`), in the statement that writes.
    Values,
    /// By the record's version (an ETag, a revision): `Write::Update::version`.
    Version,
    /// Not at all.
    None,
}

impl Capabilities {
    /// What the SQL kinds promise: everything but a change feed.
    pub const SQL: Capabilities = Capabilities {
        ordered_scan: true,
        snapshot: true,
        atomic_batch: true,
        conditional: Conditional::Values,
        read_back: true,
        change_feed: false,
    };
}

/// Where a change feed has read up to; opaque to the engine, stored with the batch it
/// covers and never moved backward.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor(pub String);

/// What changed since a cursor.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Records created or updated, as they are now.
    pub upserted: Vec<Record>,
    /// Keys of records deleted.
    pub deleted: Vec<Key>,
    /// Where the next call continues from.
    pub cursor: Option<Cursor>,
}

/// What a change feed holds past its confirmed position.
#[derive(Debug, Clone, Default)]
pub struct FeedRead {
    /// Set when the feed cannot say what changed before now (its slot was missing,
    /// invalidated or too far behind, and was made again; a TRUNCATE; a delete that did
    /// not carry the link's key): the link must be read in full. Says why.
    pub restarted: Option<String>,
    /// Keys of records created, updated or deleted (each once), in the order seen.
    pub keys: Vec<Key>,
    /// Where the feed is confirmed to once what these keys stand for is committed: past
    /// every change read here (syncline's own writes included). `None`: nothing read.
    pub upto: Option<String>,
    /// Whether the feed holds more than `limit` changes: call again after this cycle.
    pub more: bool,
    /// Bytes of log the feed's position holds back on the server.
    pub retained_bytes: u64,
    /// Seconds since the oldest change read here was committed (0 without one).
    pub lag_seconds: f64,
    /// Changes skipped as syncline's own writes.
    pub own_writes: u64,
}

/// A system of record. Implementations are used one call at a time, but a scan may run
/// on another thread than the writes (the engine reads ahead), hence `Send`.
///
/// This is the contract a new kind reads (version 2). A kind declares what it can
/// promise in [`capabilities`](Connector::capabilities); what follows is the strongest
/// form, which the engine adapts to where a kind declares less.
///
/// Contract, for every kind:
/// - [`scan`](Connector::scan) delivers every record exactly once, in ascending key
///   order, from one consistent snapshot, in batches of at most `batch_size` (fewer
///   once a batch weighs [`BATCH_BYTES`]; [`ScanBatches`] does both). An error
///   means the scan is incomplete: the engine then plans nothing for the link (a failed
///   read never counts as deletes). With [`ReadSpec::since`], it delivers the records
///   at or past the value, compared the way the system orders that column's type.
/// - [`apply`](Connector::apply) is atomic per batch for connector failures: on `Err`
///   nothing of the batch is written. Per-record refusals are reported as
///   [`WriteOutcome::Rejected`] and do not affect the other writes.
/// - Updates and deletes check `expect` in the same statement that writes (no
///   read-then-write window): a row changed since it was read is [`WriteOutcome::Stale`].
/// - Each write that took effect is read back in the same transaction
///   ([`BatchResult::stored`]): what the system made of it, not what was sent.
/// - Values round-trip: a value written and read back compares equal.
pub trait Connector: Send {
    /// What this system promises (see [`Capabilities`]).
    fn capabilities(&self) -> Capabilities {
        Capabilities::SQL
    }

    /// What changed since `since` (everything, as upserts, from `None`), at most
    /// `limit` records.
    ///
    /// # Errors
    /// [`ConnectorError::Unsupported`] unless the kind declares a change feed; any read
    /// failure.
    fn changes(
        &mut self,
        spec: &ReadSpec,
        since: Option<&Cursor>,
        limit: usize,
    ) -> Result<Changes, ConnectorError> {
        let _ = (spec, since, limit);
        Err(ConnectorError::Unsupported("a change feed"))
    }

    /// What the change feed `feed` holds past its confirmed position, at most about
    /// `limit` changes (whole transactions). Transactions written under `own` (see
    /// [`mark_own_writes`](Connector::mark_own_writes)) are skipped. Makes the feed's
    /// slot and publication when missing (and says so in [`FeedRead::restarted`]).
    /// Reading does not move the feed: [`confirm_feed`](Connector::confirm_feed) does,
    /// once the cycle that used it is committed, so a crash re-reads, never skips.
    ///
    /// # Errors
    /// [`ConnectorError::Unsupported`] where a kind has no feed; any read failure.
    fn feed_changes(
        &mut self,
        spec: &ReadSpec,
        feed: &crate::config::FeedSpec,
        limit: usize,
        max_retained_bytes: u64,
    ) -> Result<FeedRead, ConnectorError> {
        let _ = (spec, feed, limit, max_retained_bytes);
        Err(ConnectorError::Unsupported("a change feed"))
    }

    /// Moves the feed's confirmed position to `upto` (from [`FeedRead::upto`]).
    ///
    /// # Errors
    /// [`ConnectorError::Unsupported`] where a kind has no feed; any write failure.
    fn confirm_feed(
        &mut self,
        feed: &crate::config::FeedSpec,
        upto: &str,
    ) -> Result<(), ConnectorError> {
        let _ = (feed, upto);
        Err(ConnectorError::Unsupported("a change feed"))
    }

    /// Bytes of log the feed's slot holds back on the server; `None` when the slot does
    /// not exist. Reads only (for `status`).
    ///
    /// # Errors
    /// [`ConnectorError::Unsupported`] where a kind has no feed; any read failure.
    fn feed_retained(
        &mut self,
        feed: &crate::config::FeedSpec,
    ) -> Result<Option<u64>, ConnectorError> {
        let _ = feed;
        Err(ConnectorError::Unsupported("a change feed"))
    }

    /// Marks this connection's writes as syncline's own under `origin`, so the change
    /// feed named by it skips them. Returns whether it could (a kind or a role that
    /// cannot leaves them to the three-way comparison, which writes nothing back).
    ///
    /// # Errors
    /// A failure other than lacking the means.
    fn mark_own_writes(&mut self, origin: &str) -> Result<bool, ConnectorError> {
        let _ = origin;
        Ok(false)
    }

    /// The digest of each key range of `spec`'s collection, computed by the system
    /// without sending the rows: `bounds` are the lower bounds of ranges 1.. in key
    /// order (range 0 is every key below the first), so there are `bounds.len() + 1`.
    /// A range nobody wrote keeps its digest; a range whose rows changed gets another.
    /// A digest may also change when rows were written without their values changing
    /// (PostgreSQL's digests are of row versions): that only costs a re-read.
    ///
    /// # Errors
    /// [`ConnectorError::Unsupported`] where a kind cannot; any read failure.
    fn digests(
        &mut self,
        spec: &ReadSpec,
        bounds: &[Key],
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        let _ = (spec, bounds);
        Err(ConnectorError::Unsupported("range digests"))
    }

    /// Which database this is, as the store remembers a link's systems by: the kind, the
    /// file or database, and where the system has one a server identity that a copy or
    /// another server does not share (PostgreSQL's `system_identifier` and database
    /// oid, MySQL's `server_uuid`). Never a password.
    ///
    /// # Errors
    /// The system cannot be asked.
    fn identity(&mut self) -> Result<String, ConnectorError>;

    /// The columns of a collection.
    ///
    /// # Errors
    /// [`ConnectorError::NoCollection`] when it does not exist.
    fn describe(&mut self, collection: &str) -> Result<Vec<ColumnInfo>, ConnectorError>;

    /// Streams the whole collection in key order; returns the number of records.
    ///
    /// # Errors
    /// Any read failure, or the consumer's error ([`ConnectorError::Consumer`]).
    fn scan(
        &mut self,
        spec: &ReadSpec,
        batch_size: usize,
        consumer: &mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Result<u64, ConnectorError>;

    /// Whether the collection holds no record at all.
    ///
    /// # Errors
    /// Any read failure.
    fn is_empty(&mut self, spec: &ReadSpec) -> Result<bool, ConnectorError>;

    /// How many records the collection holds, where the system can say cheaply (`None`
    /// otherwise). Lets a cycle see that a scan would find nothing new.
    ///
    /// # Errors
    /// Any read failure.
    fn count(&mut self, spec: &ReadSpec) -> Result<Option<u64>, ConnectorError> {
        let _ = spec;
        Ok(None)
    }

    /// The records with these keys; missing keys are simply absent from the result.
    ///
    /// # Errors
    /// Any read failure.
    fn fetch(&mut self, spec: &ReadSpec, keys: &[Key]) -> Result<Vec<Record>, ConnectorError>;

    /// Applies a batch of writes in one transaction; one outcome per write, in order,
    /// and what the system stored for each write that took effect, read back before the
    /// transaction commits.
    ///
    /// # Errors
    /// A failure that is not one record's fault (connection, disk, lock timeout): nothing
    /// of the batch was written.
    fn apply(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, ConnectorError>;
}

/// A scan's batch also ends once its records weigh this much (see [`Value::weight`]):
/// with wide rows (documents, blobs) `batch_size` records could be far more memory than
/// the few batches in flight are meant to hold. Narrow rows never reach it (5,000 rows of
/// seven short columns weigh about 1.5 MiB).
pub const BATCH_BYTES: usize = 4 << 20;

/// Hands scanned records to a scan's consumer `size` at a time (or fewer, once they
/// weigh [`BATCH_BYTES`]), counting them.
pub(crate) struct ScanBatches<'c> {
    consumer: &'c mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    size: usize,
    batch: Vec<Record>,
    weight: usize,
    count: u64,
}

impl<'c> ScanBatches<'c> {
    pub fn new(
        size: usize,
        consumer: &'c mut dyn FnMut(Vec<Record>) -> Result<(), crate::Error>,
    ) -> Self {
        ScanBatches {
            consumer,
            size,
            batch: Vec::with_capacity(size),
            weight: 0,
            count: 0,
        }
    }

    pub fn push(&mut self, record: Record) -> Result<(), ConnectorError> {
        self.weight += record
            .key
            .0
            .iter()
            .chain(&record.values)
            .map(Value::weight)
            .sum::<usize>();
        self.batch.push(record);
        self.count += 1;
        if self.batch.len() >= self.size || self.weight >= BATCH_BYTES {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(self.size));
            self.weight = 0;
            (self.consumer)(full).map_err(|e| ConnectorError::Consumer(Box::new(e)))?;
        }
        Ok(())
    }

    /// Hands over the last, partial batch; returns how many records were scanned.
    pub fn finish(self) -> Result<u64, ConnectorError> {
        if !self.batch.is_empty() {
            (self.consumer)(self.batch).map_err(|e| ConnectorError::Consumer(Box::new(e)))?;
        }
        Ok(self.count)
    }
}

/// The [`Connector`] methods a wrapping connector (`engine::adapt`, `engine::translate`)
/// passes to its `inner` connector as they are: it writes only those it changes, and a
/// method added to the trait is forwarded by adding its name here once.
macro_rules! forward_to_inner {
    ($($method:ident),* $(,)?) => { $($crate::connectors::forward_to_inner!(@ $method);)* };
    (@ identity) => {
        fn identity(&mut self) -> Result<String, $crate::connectors::ConnectorError> {
            self.inner.identity()
        }
    };
    (@ describe) => {
        fn describe(
            &mut self,
            collection: &str,
        ) -> Result<Vec<$crate::connectors::ColumnInfo>, $crate::connectors::ConnectorError> {
            self.inner.describe(collection)
        }
    };
    (@ scan) => {
        fn scan(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
            batch_size: usize,
            consumer: &mut dyn FnMut(Vec<$crate::model::Record>) -> Result<(), $crate::Error>,
        ) -> Result<u64, $crate::connectors::ConnectorError> {
            self.inner.scan(spec, batch_size, consumer)
        }
    };
    (@ is_empty) => {
        fn is_empty(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
        ) -> Result<bool, $crate::connectors::ConnectorError> {
            self.inner.is_empty(spec)
        }
    };
    (@ count) => {
        fn count(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
        ) -> Result<Option<u64>, $crate::connectors::ConnectorError> {
            self.inner.count(spec)
        }
    };
    (@ fetch) => {
        fn fetch(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
            keys: &[$crate::model::Key],
        ) -> Result<Vec<$crate::model::Record>, $crate::connectors::ConnectorError> {
            self.inner.fetch(spec, keys)
        }
    };
    (@ changes) => {
        fn changes(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
            since: Option<&$crate::connectors::Cursor>,
            limit: usize,
        ) -> Result<$crate::connectors::Changes, $crate::connectors::ConnectorError> {
            self.inner.changes(spec, since, limit)
        }
    };
    (@ feed_changes) => {
        fn feed_changes(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
            feed: &$crate::config::FeedSpec,
            limit: usize,
            max_retained_bytes: u64,
        ) -> Result<$crate::connectors::FeedRead, $crate::connectors::ConnectorError> {
            self.inner.feed_changes(spec, feed, limit, max_retained_bytes)
        }
    };
    (@ confirm_feed) => {
        fn confirm_feed(
            &mut self,
            feed: &$crate::config::FeedSpec,
            upto: &str,
        ) -> Result<(), $crate::connectors::ConnectorError> {
            self.inner.confirm_feed(feed, upto)
        }
    };
    (@ feed_retained) => {
        fn feed_retained(
            &mut self,
            feed: &$crate::config::FeedSpec,
        ) -> Result<Option<u64>, $crate::connectors::ConnectorError> {
            self.inner.feed_retained(feed)
        }
    };
    (@ mark_own_writes) => {
        fn mark_own_writes(
            &mut self,
            origin: &str,
        ) -> Result<bool, $crate::connectors::ConnectorError> {
            self.inner.mark_own_writes(origin)
        }
    };
    (@ digests) => {
        fn digests(
            &mut self,
            spec: &$crate::connectors::ReadSpec,
            bounds: &[$crate::model::Key],
        ) -> Result<Vec<$crate::connectors::RangeDigest>, $crate::connectors::ConnectorError> {
            self.inner.digests(spec, bounds)
        }
    };
}
pub(crate) use forward_to_inner;

/// Opens the connector for a system.
///
/// # Errors
/// The system cannot be reached or opened.
pub fn open(name: &str, spec: &SystemSpec) -> Result<Box<dyn Connector>, ConnectorError> {
    spec.open(name)
}
