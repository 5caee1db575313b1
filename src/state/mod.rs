//! The state store: everything syncline remembers between runs.
//!
//! - **pairs**: the id map and the base together — one row per linked record pair with
//!   both native keys, the last agreed value of each field, and the marks that detect
//!   bouncing writes. They are always read and written together, so one row keeps a
//!   pair's identity and base consistent by construction.
//! - **journal**: every planned and applied write, with its reason and outcome. Entries
//!   are written `planned` before their batch is written; a batch that applied is then
//!   recorded once, as its range of entries (**journal_applied**), and only entries with
//!   another outcome (`stale`, `rejected`, `unknown`) are updated. A batch's creates are
//!   one entry, its records listed by key in **journal_member_chunks** (a chunk of keys
//!   per row); a record whose create gets another outcome leaves the group as an entry
//!   of its own.
//! - **conflicts**, **quarantine**: what waits for a person.
//! - **runs**, **links**: run history, and which config each link's rows belong to.
//!
//! Embedded SQLite by default, in WAL mode with `synchronous = FULL`, so a commit is on
//! disk when it returns; one writer at a time (`BEGIN IMMEDIATE`); a thread of its own checkpoints the WAL. Or PostgreSQL, for a
//! store shared by several machines. Scratch tables for one run (records waiting to be
//! matched, the staged plan) are temporary: they never reach the store's durable tables.

mod checkpoint;
mod db;
mod lease;
mod schema;

pub use lease::LinkHold;

use crate::model::{Key, Name, Side, Value};
use db::{Db, P, Row};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot upgrade the schema of {path}: {source}")]
    Migrate {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("cannot connect to the PostgreSQL state store: {0}")]
    Connect(String),
    #[error("corrupt state row: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Lease(String),
    #[error(
        "{path} is not a syncline state store: {why}. A new store is made only where no file exists: move this file away (or point [state] path elsewhere) to start one, and nothing is lost by mistake"
    )]
    NotAStore { path: String, why: &'static str },
}

/// An existing file where the embedded store is expected must be an SQLite database: an
/// empty file (a failed copy, a truncation) taken as a new store would re-link every
/// record with no word that every base was lost.
fn check_store_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let not_a_store = |why| StateError::NotAStore {
        path: path.display().to_string(),
        why,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StateError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            });
        }
    };
    let mut header = Vec::with_capacity(16);
    let _ = file.by_ref().take(16).read_to_end(&mut header);
    match header.len() {
        0 => Err(not_a_store("the file is empty")),
        _ if header != b"SQLite format 3\0" => Err(not_a_store("it is not an SQLite database")),
        _ => Ok(()),
    }
}

/// An SQLite database that has tables but was never a syncline store (`user_version`
/// 0): someone's data, which the store's tables must not be created in.
fn refuse_foreign_database(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if version == 0 && tables > 0 {
        return Err(StateError::NotAStore {
            path: path.display().to_string(),
            why: "it is an SQLite database with tables of its own",
        });
    }
    Ok(())
}

pub type Result<T> = std::result::Result<T, StateError>;

fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Detects a value that does not stick: the side it was written to changed it back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// The side syncline last wrote this unit to.
    pub side: Side,
    /// Fingerprint of the value written (xxh3 of its encoding).
    pub hash: u64,
    /// Fingerprint of the value it replaced: a bounce is the same replacement again
    /// (a trigger rewriting our value the same way), not a person's new edit.
    #[serde(default)]
    pub replaced: u64,
    /// The link's run number of that write.
    pub run: i64,
    /// How many consecutive runs had to write the same value again.
    pub bounces: u32,
}

/// One linked pair: the id map entry and its base.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PairRow {
    pub left_key: String,
    pub right_key: String,
    /// Field name → last agreed value (normalized by the field's transform).
    pub base: BTreeMap<Name, Value>,
    /// Unit name → last write mark.
    pub marks: BTreeMap<String, Mark>,
    /// `Some(side)`: that side's record was deleted and the link says `ignore`: the pair
    /// is kept so the survivor is neither synced nor re-created.
    pub tombstone: Option<Side>,
    /// What each side holds where it is not exactly the base (see [`Held`]).
    pub held: Held,
}

/// Per side (`[left, right]`), field name → the value that side's system actually holds
/// for a field whose base it does not hold exactly: what a trigger, a default, a
/// rounding column or another representation made of the value syncline agreed on or
/// wrote. A side's base for a field is its entry here, or else the shared base. Empty for
/// almost every pair: only a system that rewrites what it is given fills it.
pub type Held = [BTreeMap<Name, Value>; 2];

/// A pair as [`StateStore::put_pairs`] stores it: base and marks already JSON-encoded,
/// so the encoding can happen where it costs least (a created record's base is encoded
/// on the writer's thread, see `engine::apply`).
pub struct EncodedPair {
    pub left_key: String,
    pub right_key: String,
    /// [`encode_base`]'s form.
    pub base: String,
    pub marks: Option<String>,
    pub tombstone: Option<Side>,
    /// [`encode_held`]'s form.
    pub held: Option<String>,
}

impl PairRow {
    pub fn encode(&self) -> EncodedPair {
        EncodedPair {
            left_key: self.left_key.clone(),
            right_key: self.right_key.clone(),
            base: encode_base(&self.base),
            marks: encode_marks(&self.marks),
            tombstone: self.tombstone,
            held: encode_held(&self.held),
        }
    }
}

/// Held values as the store keeps them: `{"left": {…}, "right": {…}}` of encoded values,
/// or NULL when neither side holds anything but the base.
pub fn encode_held(held: &Held) -> Option<String> {
    if held.iter().all(BTreeMap::is_empty) {
        return None;
    }
    Some(format!(
        "{{\"left\":{},\"right\":{}}}",
        encode_base(&held[0]),
        encode_base(&held[1])
    ))
}

/// Reads [`encode_held`]'s form in one pass (held values are rare: names are not shared
/// as a base's are).
fn decode_held(text: &str) -> Result<Held> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sides {
        #[serde(default)]
        left: BTreeMap<Name, Value>,
        #[serde(default)]
        right: BTreeMap<Name, Value>,
    }
    let sides: Sides =
        serde_json::from_str(text).map_err(|e| StateError::Corrupt(format!("held values: {e}")))?;
    Ok([sides.left, sides.right])
}

/// Marks as the store keeps them: a JSON object of unit → mark, or NULL when none.
pub fn encode_marks(marks: &BTreeMap<String, Mark>) -> Option<String> {
    (!marks.is_empty()).then(|| serde_json::to_string(marks).expect("marks serialize"))
}

/// A base as the store keeps it: a JSON object of field name → encoded value.
pub fn encode_base(base: &BTreeMap<Name, Value>) -> String {
    write_base(base.iter().map(|(k, v)| (&**k, v)))
}

/// [`encode_base`]'s form of `fields` without building the map: the same object, its
/// names in the map's (byte) order.
pub fn encode_base_fields(mut fields: Vec<(&str, &Value)>) -> String {
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    fields.dedup_by(|later, first| later.0 == first.0);
    write_base(fields)
}

/// The JSON object of `fields` (in order), written directly: a base is written for
/// every record a run creates or changes, and serde's map machinery was most of that.
fn write_base<'a>(fields: impl IntoIterator<Item = (&'a str, &'a Value)>) -> String {
    let mut out = String::with_capacity(192);
    out.push('{');
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, |out| out.push_str(name));
        out.push(':');
        push_json_string(&mut out, |out| {
            value
                .write_encoded(out)
                .expect("writing to a String cannot fail")
        });
    }
    out.push('}');
    out
}

/// Appends the JSON string of what `write` appends to `out`: written as is, then
/// escaped by serde_json only if it holds a character JSON escapes.
fn push_json_string(out: &mut String, write: impl FnOnce(&mut String)) {
    out.push('"');
    let start = out.len();
    write(out);
    if out.as_bytes()[start..]
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let raw = out.split_off(start);
        let quoted = serde_json::to_string(&raw).expect("a string serializes");
        out.push_str(&quoted[1..quoted.len() - 1]);
    }
    out.push('"');
}

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
    pub kind: String,
    pub reason: String,
    pub detected_run: i64,
}

/// Quarantine kinds that stay until a person releases them; the others are found again
/// (or not) by every run.
pub const PERSISTENT_QUARANTINE: &[&str] = &["flapping"];

pub struct StateStore {
    /// Stopped before the connection closes (fields drop in order), so the store's own
    /// connection is the last and folds the WAL back into the file.
    checkpointer: Option<checkpoint::Checkpointer>,
    db: Db,
    read_only: bool,
    /// Statements whose text depends on a row or key count, by name and count, built once.
    multi_row: HashMap<(&'static str, usize), std::rc::Rc<str>>,
    /// Field names read from bases so far: each pair's base shares them instead of
    /// allocating its own (see [`decode_base`]).
    names: std::collections::HashSet<Name>,
    /// An embedded, writable store's per-link lock files (see [`lease`]).
    leases: Option<lease::FileLeases>,
}

/// Reads a base (see [`encode_base`]), its field names taken from `names` (and added to
/// them when new): one allocation per name per store instead of one per name per pair,
/// which was a tenth of reading a steady-state cycle's pairs.
fn decode_base(
    text: &str,
    names: &mut std::collections::HashSet<Name>,
) -> serde_json::Result<BTreeMap<Name, Value>> {
    use serde::de::{DeserializeSeed, MapAccess, Visitor};
    struct Base<'n>(&'n mut std::collections::HashSet<Name>);
    impl<'de> DeserializeSeed<'de> for Base<'_> {
        type Value = BTreeMap<Name, Value>;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Base<'_> {
        type Value = BTreeMap<Name, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base: field name → encoded value")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut base = BTreeMap::new();
            while let Some(FieldName(name)) = map.next_key()? {
                base.insert(shared_name(self.0, &name), map.next_value()?);
            }
            Ok(base)
        }
    }
    /// A name borrowed from the text when it has no escapes.
    struct FieldName<'de>(Cow<'de, str>);
    impl<'de> Deserialize<'de> for FieldName<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Text;
            impl<'de> Visitor<'de> for Text {
                type Value = FieldName<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a field name")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                    Ok(FieldName(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                    Ok(FieldName(Cow::Owned(v.to_owned())))
                }
            }
            d.deserialize_str(Text)
        }
    }
    if let Some(base) = decode_plain_base(text, names) {
        return Ok(base);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let base = Base(names).deserialize(&mut de)?;
    de.end()?;
    Ok(base)
}

/// [`decode_base`] without serde for the common base: no escaped character anywhere
/// (`write_base` escapes only quotes, backslashes and control characters) and no space,
/// as syncline writes it — then every string runs to the next quote. Reading pairs is
/// most of a steady-state cycle, and serde's map machinery was most of reading a pair.
/// `None` for anything else, which serde reads (and names, if it is broken).
fn decode_plain_base(
    text: &str,
    names: &mut std::collections::HashSet<Name>,
) -> Option<BTreeMap<Name, Value>> {
    if text.contains('\\') {
        return None;
    }
    let mut rest = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut base = BTreeMap::new();
    // A quoted string at the start of `rest`, and what follows it.
    fn quoted(rest: &str) -> Option<(&str, &str)> {
        rest.strip_prefix('"')?.split_once('"')
    }
    while !rest.is_empty() {
        let (name, after) = quoted(rest)?;
        let (encoded, after) = quoted(after.strip_prefix(':')?)?;
        rest = match after.strip_prefix(',') {
            Some(more) if !more.is_empty() => more,
            Some(_) => return None,
            None if after.is_empty() => after,
            None => return None,
        };
        base.insert(shared_name(names, name), Value::decode(encoded).ok()?);
    }
    Some(base)
}

/// `name` as the store's one shared copy of it, made on first sight.
fn shared_name(names: &mut std::collections::HashSet<Name>, name: &str) -> Name {
    if let Some(known) = names.get(name) {
        return known.clone();
    }
    let new = Name::from(name);
    names.insert(new.clone());
    new
}

fn enc_values(vs: &[Value]) -> String {
    serde_json::to_string(vs).expect("values serialize")
}

fn dec_values(s: &str) -> Result<Vec<Value>> {
    serde_json::from_str(s).map_err(|e| StateError::Corrupt(format!("{e}: {s}")))
}

pub fn hash_values(vs: &[Value]) -> u64 {
    let mut buf = String::new();
    for v in vs {
        buf.push_str(&v.encode());
        buf.push('\u{0}');
    }
    xxhash_rust::xxh3::xxh3_64(buf.as_bytes())
}

/// Keys looked up (or marked) per statement.
const LOOKUP_CHUNK: usize = 200;

/// Rows written per multi-row statement (journal entries, pairs).
const WRITE_CHUNK: usize = 100;

/// Members of a grouped journal entry listed per `journal_member_chunks` row.
const MEMBER_CHUNK: usize = 500;

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

/// `$first, $first+1, …` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VALUES` tuples for `rows` rows: each is `(shared` + its own `per_row` parameters
/// (numbered on from `first`) + `trailing)`.
fn row_tuples(rows: usize, shared: &str, first: usize, per_row: usize, trailing: &str) -> String {
    (0..rows)
        .map(|i| {
            format!(
                "({shared}{}{trailing})",
                placeholders(first + i * per_row, per_row)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn side_of(s: &str) -> Side {
    if s == "left" { Side::Left } else { Side::Right }
}

impl StateStore {
    /// Opens (creating it and its folder if needed) and upgrades the embedded store.
    ///
    /// # Errors
    /// The file cannot be created or opened, or its schema cannot be upgraded.
    pub fn open(path: &Path) -> Result<StateStore> {
        let open_err = |e| StateError::Open {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
                path: path.display().to_string(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let leases = lease::FileLeases::beside(path);
        let mut conn;
        {
            // Two processes opening a new store at once would both switch it to WAL (the
            // switch does not wait for a busy store: it fails) and both find it empty
            // and create its tables (the second fails): one at a time. And the file
            // SQLite creates on open is empty until then: looked at under the same turn.
            let _one_at_a_time = leases.wait_for("schema")?;
            check_store_file(path)?;
            conn = Connection::open(path).map_err(open_err)?;
            conn.busy_timeout(Duration::from_secs(30))
                .map_err(open_err)?;
            refuse_foreign_database(&conn, path)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(open_err)?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(open_err)?;
            schema::migrations()
                .to_latest(&mut conn)
                .map_err(|e| StateError::Migrate {
                    path: path.display().to_string(),
                    source: e,
                })?;
        }
        let checkpointer = checkpoint::Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
                .map_err(open_err)?;
        }
        let mut store = Self::prepare_sqlite(conn, false)?;
        store.checkpointer = checkpointer;
        store.leases = Some(leases);
        Ok(store)
    }

    /// Opens an existing embedded store without ever writing to it (for `plan`,
    /// `status`, …). A store that does not exist yet reads as empty.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn open_read_only(path: &Path) -> Result<StateStore> {
        if !path.exists() {
            let mut conn = Connection::open_in_memory()?;
            schema::migrations()
                .to_latest(&mut conn)
                .map_err(|e| StateError::Migrate {
                    path: ":memory:".into(),
                    source: e,
                })?;
            return Self::prepare_sqlite(conn, true);
        }
        check_store_file(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StateError::Open {
            path: path.display().to_string(),
            source: e,
        })?;
        conn.busy_timeout(Duration::from_secs(30))?;
        refuse_foreign_database(&conn, path)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if !(schema::READABLE_FROM..=schema::VERSION).contains(&version) {
            return Err(StateError::Corrupt(format!(
                "{} has schema version {version}, this syncline uses {}; run `syncline run` once to upgrade it",
                path.display(),
                schema::VERSION
            )));
        }
        let mut store = Self::prepare_sqlite(conn, true)?;
        // Only looked at (`status` names who is running a link), never taken.
        store.leases = Some(lease::FileLeases::beside(path));
        Ok(store)
    }

    /// Opens the store a config names. `read_only` stores never write a durable table
    /// (for `plan`, `status`, `log`, …).
    ///
    /// # Errors
    /// See [`open`](Self::open), [`open_read_only`](Self::open_read_only) and
    /// [`open_postgres`](Self::open_postgres).
    pub fn for_config(
        location: &crate::config::StateLocation,
        read_only: bool,
    ) -> Result<StateStore> {
        use crate::config::StateLocation;
        match (location, read_only) {
            (StateLocation::Sqlite(path), false) => Self::open(path),
            (StateLocation::Sqlite(path), true) => Self::open_read_only(path),
            (StateLocation::Postgres(url), ro) => Self::open_postgres(url.expose(), ro),
        }
    }

    /// Connects to a PostgreSQL store, creating or upgrading its tables. `read_only`
    /// stores (for `plan`, `status`, …) never write a durable table.
    ///
    /// # Errors
    /// The server cannot be reached, or the schema cannot be created or upgraded.
    pub fn open_postgres(url: &str, read_only: bool) -> Result<StateStore> {
        let mut client =
            crate::connectors::postgres::tls::connect(url).map_err(StateError::Connect)?;
        client.batch_execute(
            // The process id names the holder of a link another run finds taken.
            &format!(
                "SET client_min_messages = warning; SET application_name = 'syncline:state pid {}'",
                std::process::id()
            ),
        )?;
        if !read_only {
            let mut tx = client.transaction()?;
            // One upgrader at a time, across machines.
            tx.batch_execute("SELECT pg_advisory_xact_lock(4242001); CREATE TABLE IF NOT EXISTS syncline_schema (version bigint NOT NULL)")?;
            let version: i64 = tx
                .query_opt("SELECT version FROM syncline_schema", &[])?
                .map_or(0, |r| r.get(0));
            for (i, step) in schema::pg_migrations()
                .iter()
                .enumerate()
                .skip(version as usize)
            {
                tx.batch_execute(step)?;
                tx.execute("DELETE FROM syncline_schema", &[])?;
                tx.execute(
                    "INSERT INTO syncline_schema VALUES ($1)",
                    &[&(i as i64 + 1)],
                )?;
            }
            tx.commit()?;
        } else {
            let exists: bool = client
                .query_one("SELECT to_regclass('syncline_schema') IS NOT NULL", &[])?
                .get(0);
            let version: i64 = if exists {
                client
                    .query_opt("SELECT version FROM syncline_schema", &[])?
                    .map_or(0, |r| r.get(0))
            } else {
                0
            };
            if version == 0 {
                // Nothing stored yet: an empty store reads as empty, from session-private
                // tables, and nothing is created in the database.
                for step in schema::pg_migrations() {
                    client.batch_execute(&step.replace("CREATE TABLE", "CREATE TEMP TABLE"))?;
                }
            } else if !(schema::READABLE_FROM..=schema::VERSION).contains(&version) {
                return Err(StateError::Corrupt(format!(
                    "the PostgreSQL state store has schema version {version}, this syncline uses {}; run `syncline run` once to upgrade it",
                    schema::VERSION
                )));
            }
        }
        client.batch_execute(schema::PG_TEMP_TABLES)?;
        Ok(StateStore {
            checkpointer: None,
            db: Db::Postgres {
                client: Box::new(client),
                statements: Default::default(),
            },
            read_only,
            multi_row: HashMap::new(),
            names: Default::default(),
            leases: None,
        })
    }

    fn prepare_sqlite(conn: Connection, read_only: bool) -> Result<StateStore> {
        conn.set_prepared_statement_cache_capacity(64);
        // 8 MiB of page cache (SQLite's default is 2): the scratch tables of a large
        // first run spill less, and memory still does not grow with the collection.
        conn.pragma_update(None, "cache_size", -8192)?;
        conn.execute_batch(schema::SQLITE_TEMP_TABLES)?;
        Ok(StateStore {
            checkpointer: None,
            db: Db::Sqlite {
                conn,
                dialect: HashMap::new(),
            },
            read_only,
            multi_row: HashMap::new(),
            names: Default::default(),
            leases: None,
        })
    }

    /// The statement `name` for `rows` rows (or keys), built by `build` the first time.
    fn multi_row_sql(
        &mut self,
        name: &'static str,
        rows: usize,
        build: impl FnOnce(usize) -> String,
    ) -> std::rc::Rc<str> {
        self.multi_row
            .entry((name, rows))
            .or_insert_with(|| build(rows).into())
            .clone()
    }

    /// Opens a write transaction; [`end`](Self::end) commits or rolls it back.
    pub fn begin(&mut self) -> Result<()> {
        // A read-only SQLite store only ever writes its TEMP scratch tables: plain BEGIN.
        let sql = match (&self.db, self.read_only) {
            (Db::Sqlite { .. }, false) => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        };
        self.db.batch(sql)
    }

    pub fn end(&mut self, commit: bool) -> Result<()> {
        if commit {
            self.db.batch("COMMIT")
        } else {
            let _ = self.db.batch("ROLLBACK");
            Ok(())
        }
    }

    /// Runs `f` in one write transaction.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.end(true)?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.end(false);
                Err(e)
            }
        }
    }

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
    pub fn run_planned_to_unknown(&mut self, run: i64) -> Result<u64> {
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
    pub fn link_state(&mut self, link: &str) -> Result<Option<(String, i64)>> {
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
    pub fn link_systems(&mut self, link: &str) -> Result<Option<[String; 2]>> {
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

    pub fn set_link_systems(&mut self, link: &str, systems: &[String; 2]) -> Result<()> {
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
        Ok(())
    }

    /// Forgets a link's id map, bases, conflicts and quarantine, on purpose (`run
    /// --relink`): its records are paired again from scratch.
    pub fn forget_link(&mut self, link: &str) -> Result<()> {
        self.transaction(|s| s.drop_link_rows(link))
    }

    /// Starts a new run of a link: records its identity, bumps its run counter. When the
    /// identity changed (the config now points at other collections or keys), the old id
    /// map and base are dropped: they describe other records.
    pub fn begin_link_run(&mut self, link: &str, identity: &str) -> Result<(i64, bool)> {
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

    /// Inserts or replaces pairs, many rows per statement. Their left keys must differ
    /// (one statement cannot upsert a row twice).
    pub fn put_pairs(&mut self, link: &str, pairs: &[EncodedPair]) -> Result<()> {
        for chunk in pairs.chunks(WRITE_CHUNK) {
            let sql = self.multi_row_sql("pairs", chunk.len(), |n| {
                format!(
                    "INSERT INTO pairs (link, left_key, right_key, base, marks, tombstone, held) VALUES {}
                     ON CONFLICT (link, left_key) DO UPDATE SET right_key = excluded.right_key, base = excluded.base,
                       marks = excluded.marks, tombstone = excluded.tombstone, held = excluded.held",
                    row_tuples(n, "$1, ", 2, 6, "")
                )
            });
            let mut params = vec![P::Text(link)];
            for p in chunk {
                params.extend([
                    P::Text(&p.left_key),
                    P::Text(&p.right_key),
                    P::Text(&p.base),
                    P::OptText(p.marks.as_deref()),
                    P::OptText(p.tombstone.map(Side::as_str)),
                    P::OptText(p.held.as_deref()),
                ]);
            }
            self.db.execute(&sql, &params)?;
        }
        Ok(())
    }

    pub fn delete_pair_by_right(&mut self, link: &str, right_key: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM pairs WHERE link = $1 AND right_key = $2",
            &[P::Text(link), P::Text(right_key)],
        )?;
        Ok(())
    }

    pub fn delete_pair(&mut self, link: &str, left_key: &str) -> Result<()> {
        self.db.execute(
            "DELETE FROM pairs WHERE link = $1 AND left_key = $2",
            &[P::Text(link), P::Text(left_key)],
        )?;
        Ok(())
    }

    // ---- scratch tables for one run ---------------------------------------------------

    pub fn clear_scratch(&mut self) -> Result<()> {
        self.db.batch(
            "DELETE FROM seen; DELETE FROM unlinked; DELETE FROM matches; DELETE FROM plan;
             DROP INDEX IF EXISTS unlinked_key; DROP INDEX IF EXISTS unlinked_match;
             DROP INDEX IF EXISTS unlinked_ref; DROP INDEX IF EXISTS unlinked_text;",
        )
    }

    /// Remembers that linked keys were present in this run's scan of `side`.
    pub fn mark_seen(&mut self, side: Side, keys: &[String]) -> Result<()> {
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
    pub fn right_links(
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
    pub fn pairs_with_nothing_left(&mut self, link: &str) -> Result<Vec<String>> {
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

    /// Stages a record no pair knows, to be matched once both sides are read.
    /// Stages records with no pair, to be matched after both scans; many rows per
    /// statement.
    pub fn stage_unlinked(&mut self, side: Side, records: &[Unlinked]) -> Result<()> {
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
    pub fn match_unlinked(&mut self, by_refs: bool) -> Result<Vec<(Side, String, String)>> {
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
    pub fn matched_page(
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
    pub fn unmatched_page(
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

    pub fn stage_plan(&mut self, body: &str) -> Result<()> {
        self.db
            .execute("INSERT INTO plan (body) VALUES ($1)", &[P::Text(body)])?;
        Ok(())
    }

    pub fn plan_page(&mut self, after: i64, limit: usize) -> Result<Vec<(i64, String)>> {
        self.db
            .query(
                "SELECT seq, body FROM plan WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[P::Int(after), P::Int(limit as i64)],
            )?
            .iter()
            .map(|r| Ok((r.int(0)?, r.text(1)?)))
            .collect()
    }

    // ---- journal -------------------------------------------------------------------

    /// Journals a batch's changes as `planned`, many rows per statement. Creates that
    /// share everything but their record are one entry (see [`group_of`]). Returns where
    /// the entries are, so outcomes are set with [`journal_outcome`](Self::journal_outcome)
    /// and [`journal_applied_within`](Self::journal_applied_within) without reading ids back.
    pub fn journal_planned_batch(
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

    /// Journals changes with one status, one entry each, many rows per statement.
    pub fn journal_batch(
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
    pub fn journal_outcome(
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
    pub fn journal_applied_within(&mut self, at: JournalRange) -> Result<()> {
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
    pub fn upsert_conflict(&mut self, c: &ConflictRow, run: i64) -> Result<()> {
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
    pub fn prune_conflicts(&mut self, link: &str, run: i64) -> Result<()> {
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
                    kind: r.text(4)?,
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
            .filter(|q| PERSISTENT_QUARANTINE.contains(&q.kind.as_str()))
            .map(|q| (q.side, q.key, q.field))
            .collect())
    }

    pub fn put_quarantine(&mut self, q: &QuarantineRow, run: i64) -> Result<()> {
        self.db.execute(
            "INSERT INTO quarantine (link, side, key, field, kind, reason, detected_run, last_seen_run) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (link, side, key, field, kind) DO UPDATE SET reason = excluded.reason, last_seen_run = excluded.last_seen_run",
            &[
                P::Text(&q.link),
                P::Text(q.side.as_str()),
                P::Text(&q.key),
                P::Text(&q.field),
                P::Text(&q.kind),
                P::Text(&q.reason),
                P::Int(run),
            ],
        )?;
        Ok(())
    }

    /// Clears findings this run did not make again; persistent kinds stay.
    pub fn prune_quarantine(&mut self, link: &str, run: i64) -> Result<()> {
        self.db.execute(
            "DELETE FROM quarantine WHERE link = $1 AND last_seen_run < $2 AND kind <> 'flapping'",
            &[P::Text(link), P::Int(run)],
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

#[cfg(test)]
mod tests {
    use super::{Change, StateStore};
    use crate::model::{Name, Side, Value};
    use std::collections::BTreeMap;

    proptest::proptest! {
        /// A base written directly is the JSON serde writes for the map, whatever its
        /// names and texts hold (quotes, backslashes, control characters, any Unicode),
        /// and reads back as the map, by serde and by `decode_base`.
        #[test]
        fn a_base_is_written_as_serde_writes_it(
            fields in proptest::collection::btree_map("[a-z_\"\\\\\u{0}-\u{1f}é]{0,6}", "\\PC*|[\"\\\\\u{0}-\u{1f}\u{7f}]{0,3}", 0..6),
            number: i64,
        ) {
            let mut base: BTreeMap<Name, Value> = fields
                .into_iter()
                .map(|(k, v)| (Name::from(k), Value::Text(v)))
                .collect();
            base.insert("n".into(), Value::Integer(number));
            let written = super::encode_base(&base);
            proptest::prop_assert_eq!(&written, &serde_json::to_string(&base).unwrap());
            let read: BTreeMap<Name, Value> = serde_json::from_str(&written).unwrap();
            proptest::prop_assert_eq!(read, base.clone());
            // Read with shared names: the same map, and a second read shares the first's.
            let mut names = std::collections::HashSet::new();
            let first = super::decode_base(&written, &mut names).unwrap();
            let second = super::decode_base(&written, &mut names).unwrap();
            proptest::prop_assert_eq!(&first, &base);
            for (a, b) in first.keys().zip(second.keys()) {
                proptest::prop_assert!(std::sync::Arc::ptr_eq(a, b), "{} is read twice", a);
            }
            let unsorted = base.iter().rev().map(|(k, v)| (&**k, v)).collect();
            proptest::prop_assert_eq!(super::encode_base_fields(unsorted), written);
        }
    }

    /// The fast read of a base takes only what syncline writes; anything else goes to
    /// serde, which reads what is valid JSON and refuses the rest.
    #[test]
    fn a_base_syncline_did_not_write_is_read_by_serde() {
        let mut names = std::collections::HashSet::new();
        let plain = super::decode_plain_base(r#"{"a":"I1","b":"Tx"}"#, &mut names).unwrap();
        assert_eq!(plain.len(), 2);
        for other in [
            r#"{ "a": "I1" }"#,
            r#"{"a":"T\"q"}"#,
            r#"{"a":"I1",}"#,
            r#"{"a":""}"#,
            "[]",
            "",
        ] {
            assert_eq!(super::decode_plain_base(other, &mut names), None, "{other}");
        }
        let spaced = super::decode_base(r#"{ "a": "I1" }"#, &mut names).unwrap();
        assert_eq!(spaced.get("a"), Some(&Value::Integer(1)));
        assert!(super::decode_base(r#"{"a":"I1",}"#, &mut names).is_err());
        assert_eq!(super::decode_base("{}", &mut names).unwrap().len(), 0);
    }

    fn create_change() -> Change {
        Change {
            side: Side::Right,
            op: "create".into(),
            field: None,
            old: None,
            new: None,
            reason: "new on the left".into(),
        }
    }

    /// Pairs are found by either side's keys whether the keys asked for lie close
    /// together (one range read) or far apart in a range of many other pairs (the range
    /// is refused and the keys looked up one by one), and keys without a pair are absent.
    #[test]
    fn pairs_are_found_by_key_whether_their_range_is_dense_or_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(&dir.path().join("s.db")).unwrap();
        let key = |n: i64| crate::model::Key::single(Value::Integer(n)).encode();
        let pairs: Vec<_> = (1..=100)
            .map(|n| {
                super::PairRow {
                    left_key: key(n),
                    right_key: format!("r{n}"),
                    base: [(Name::from("f"), Value::Integer(n))].into(),
                    marks: Default::default(),
                    tombstone: None,
                    held: Default::default(),
                }
                .encode()
            })
            .collect();
        s.put_pairs("c", &pairs).unwrap();
        s.put_pairs("other", &pairs[..10]).unwrap();
        for wanted in [
            vec![3, 4, 5],
            vec![20, 21, 23, 24],
            vec![3, 4, 5, 200],
            vec![1, 100],
            vec![7],
            vec![50, 10, 99, 1],
            vec![0, 101],
        ] {
            let expected: Vec<i64> = wanted
                .iter()
                .copied()
                .filter(|n| (1..=100).contains(n))
                .collect();
            for side in [Side::Left, Side::Right] {
                let side_key = |n: i64| match side {
                    Side::Left => key(n),
                    Side::Right => format!("r{n}"),
                };
                let keys: Vec<String> = wanted.iter().map(|&n| side_key(n)).collect();
                let found = s.pairs_by("c", side, &keys).unwrap();
                let mut got: Vec<(i64, String, String)> = found
                    .iter()
                    .map(|(k, p)| {
                        let Some(Value::Integer(n)) = p.base.get("f") else {
                            panic!("base of {k}")
                        };
                        (*n, k.clone(), p.right_key.clone())
                    })
                    .collect();
                got.sort();
                let mut want: Vec<(i64, String, String)> = expected
                    .iter()
                    .map(|&n| (n, side_key(n), format!("r{n}")))
                    .collect();
                want.sort();
                assert_eq!(got, want, "{side} keys {wanted:?}");
            }
        }
    }

    /// v5 listed a grouped entry's records a row each; v6 lists them in chunks. An
    /// upgraded store still finds the entry by any of its records' keys, on either side.
    #[test]
    fn a_v5_store_keeps_its_grouped_entries_findable_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::schema::migrations()
                .to_version(&mut conn, 5)
                .unwrap();
            conn.execute_batch(
                "INSERT INTO runs (id, started_at, command, status) VALUES (1, 't', 'run', 'ok');
                 INSERT INTO journal (id, run, at, link, side, op, reason, status, records)
                   VALUES (7, 1, 't', 'c', 'right', 'create', 'new on the left', 'applied', 3);
                 INSERT INTO journal_members (link, key_side, key, entry)
                   VALUES ('c', 'left', 'Pa1', 7), ('c', 'left', 'Pa2', 7), ('c', 'left', 'Pb10', 7);
                 INSERT INTO pairs (link, left_key, right_key, base) VALUES ('c', 'Pb10', 'Tten', '{}');",
            )
            .unwrap();
        }
        let mut s = StateStore::open(&path).unwrap();
        for (key, shown) in [("Pa2", "2"), ("Pb10", "10"), ("Tten", "10")] {
            let found = s.journal(Some("c"), Some(key), None, 10).unwrap();
            assert_eq!(found.len(), 1, "{key}");
            assert_eq!(found[0].records, Some(3));
            assert_eq!(found[0].left_key.as_deref(), Some(shown), "{key}");
        }
        assert!(
            s.journal(Some("c"), Some("Pa3"), None, 10)
                .unwrap()
                .is_empty()
        );
        assert!(s.journal(None, Some("Pa1"), None, 10).unwrap().len() == 1);
    }

    #[test]
    fn an_older_store_is_upgraded_to_sortable_keys_and_an_applied_batch_is_one_range() {
        use crate::model::{Key, Value};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let composite = Key(vec![Value::Integer(-12), Value::Text("x\u{1f}\\I7".into())]);
        // A store an earlier release wrote (schema v2): statuses are in the rows, and
        // integer keys in their earlier form (`I1`, `I-12`).
        {
            let mut conn = rusqlite::Connection::open(&path).unwrap();
            super::schema::migrations()
                .to_version(&mut conn, 2)
                .unwrap();
            conn.execute_batch(
                "INSERT INTO runs (id, started_at, command, status) VALUES (1, 't', 'run', 'ok');
                 INSERT INTO journal (run, at, link, left_key, side, op, reason, status)
                   VALUES (1, 't', 'c', 'I1', 'right', 'create', 'new on the left', 'applied');",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO pairs (link, left_key, right_key, base) VALUES ('c', ?1, 'Tabc', '{}'),
                   ('c', 'I9223372036854775807', 'I-9223372036854775808', '{}')",
                ["I-12\u{1f}Tx\\u\\\\I7"],
            )
            .unwrap();
        }
        let status = |s: &mut StateStore| -> Vec<String> {
            let mut entries = s.journal(Some("c"), None, None, 10).unwrap();
            entries.sort_by_key(|e| e.id);
            entries.into_iter().map(|e| e.status).collect()
        };
        // `plan`, `log`, `status` would look keys up in the new form: they refuse.
        let Err(refused) = StateStore::open_read_only(&path) else {
            panic!("a read-only open of a v2 store must ask for an upgrade")
        };
        assert!(refused.to_string().contains("syncline run"), "{refused}");
        // A run upgrades it, keys and all.
        drop(StateStore::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let stored = |sql: &str| -> Vec<String> {
            let mut st = conn.prepare(sql).unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(stored("SELECT left_key FROM journal"), ["Pa1"]);
        let mut pairs = stored("SELECT left_key || ' ' || right_key FROM pairs");
        pairs.sort();
        let mut expected = vec![
            format!("{} Tabc", composite.encode()),
            format!(
                "{} {}",
                Key::single(Value::Integer(i64::MAX)).encode(),
                Key::single(Value::Integer(i64::MIN)).encode()
            ),
        ];
        expected.sort();
        assert_eq!(pairs, expected);
        drop(conn);
        // A run upgrades it; a batch that applies is recorded as its range, and an entry
        // with another outcome keeps it.
        let mut s = StateStore::open(&path).unwrap();
        let change = create_change();
        let run = s.begin_run("run").unwrap();
        let at = s
            .journal_planned_batch(
                run,
                "c",
                &[(Some("Pa2"), None, &change), (Some("Pa3"), None, &change)],
            )
            .unwrap();
        s.journal_outcome(at, "c", Side::Right, (Some("Pa3"), None), "rejected")
            .unwrap();
        let next = s
            .journal_planned_batch(run, "c", &[(Some("Pa4"), None, &change)])
            .unwrap();
        s.journal_applied_within(at).unwrap();
        assert_eq!(
            status(&mut s),
            ["applied", "applied", "rejected", "planned"]
        );
        let last = s.last_write("c", "Pa2", "any").unwrap();
        assert_eq!(last.map(|(r, ..)| r), Some(run));
        // The two creates were one entry; the rejected one left it with its outcome. Each
        // is found by its key, and a created record by its new key through the id map.
        s.put_pairs(
            "c",
            &[super::PairRow {
                left_key: "Pa2".into(),
                right_key: "Tr2".into(),
                base: Default::default(),
                marks: Default::default(),
                tombstone: None,
                held: Default::default(),
            }
            .encode()],
        )
        .unwrap();
        let found = |s: &mut StateStore, key: &str| -> Vec<(Option<String>, String, Option<i64>)> {
            let entries = s.journal(Some("c"), Some(key), None, 10).unwrap();
            entries
                .into_iter()
                .map(|e| (e.left_key, e.status, e.records))
                .collect()
        };
        assert_eq!(
            found(&mut s, "Tr2"),
            [(Some("2".into()), "applied".into(), Some(1))]
        );
        assert_eq!(
            found(&mut s, "Pa3"),
            [(Some("3".into()), "rejected".into(), None)]
        );
        // The next batch never came back: the run is interrupted, its entry unknown.
        drop(s);
        let mut s = StateStore::open(&path).unwrap();
        assert_eq!(s.mark_interrupted_runs().unwrap(), 1);
        assert_eq!(
            status(&mut s),
            ["applied", "applied", "rejected", "unknown"]
        );
        assert_eq!(next.run, run);
    }

    #[test]
    fn a_run_that_never_finished_leaves_its_planned_entries_unknown_and_no_one_elses() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(&dir.path().join("state.db")).unwrap();
        let change = create_change();
        // A finished run whose entry stayed planned (an older build's): not this run's.
        let done = s.begin_run("run").unwrap();
        s.journal_batch(done, "c", &[(Some("Pa1"), None, &change)], "planned")
            .unwrap();
        s.finish_run(done, "ok", &serde_json::json!({})).unwrap();
        // The run that died between journaling a batch and committing it.
        let died = s.begin_run("run").unwrap();
        s.journal_planned_batch(
            died,
            "c",
            &[(Some("Pa2"), None, &change), (Some("Pa3"), None, &change)],
        )
        .unwrap();
        assert_eq!(s.mark_interrupted_runs().unwrap(), 1);
        // The died run's two creates are one entry, listed as such…
        let journal = s.journal(Some("c"), None, Some(died), 10).unwrap();
        assert_eq!(journal.len(), 1, "{journal:?}");
        assert_eq!(
            (journal[0].records, journal[0].left_key.as_deref()),
            (Some(2), None)
        );
        // …and under each record's key when the journal is asked for one. The journal
        // shows keys as people write them: `Pa2` (integer 2) reads `2`.
        let mut status = |key: &str| {
            let found = s.journal(Some("c"), Some(key), None, 10).unwrap();
            assert_eq!(found.len(), 1, "{found:?}");
            (found[0].left_key.clone().unwrap(), found[0].status.clone())
        };
        assert_eq!(status("Pa2"), ("2".into(), "unknown".into()));
        assert_eq!(status("Pa3"), ("3".into(), "unknown".into()));
        assert_eq!(status("Pa1"), ("1".into(), "planned".into()));
        // A run that failed (a system broke mid-batch) leaves no entry `planned` either.
        let failed = s.begin_run("run").unwrap();
        let at = s
            .journal_planned_batch(failed, "c", &[(Some("Pa4"), None, &change)])
            .unwrap();
        assert_eq!((at.run, at.upto - at.after), (failed, 1));
        s.finish_run(failed, "failed", &serde_json::json!({}))
            .unwrap();
        let journal = s.journal(Some("c"), None, Some(failed), 10).unwrap();
        assert_eq!(journal[0].status, "unknown");
    }
}
