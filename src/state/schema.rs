//! The state store's schema and its migrations (`PRAGMA user_version`).

use rusqlite_migration::{M, Migrations};

/// The schema version this build writes; stores at an older one are upgraded by `open`.
pub const VERSION: i64 = 9;

/// The oldest version a read-only open accepts without an upgrade. Older stores hold
/// integer keys in the form before v4's, which this build's lookups would not find, or
/// lack v5's grouped journal entries, v6's member chunks or v7's held values, which its
/// queries read: `plan`, `log` or `explain` would read them wrong, so they ask for one `run` to
/// upgrade first.
pub const READABLE_FROM: i64 = 7;

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE links (
            name TEXT PRIMARY KEY,
            identity TEXT NOT NULL,
            run_seq INTEGER NOT NULL
         );
         CREATE TABLE pairs (
            link TEXT NOT NULL,
            left_key TEXT NOT NULL,
            right_key TEXT NOT NULL,
            base TEXT NOT NULL,
            marks TEXT,
            tombstone TEXT,
            PRIMARY KEY (link, left_key)
         ) WITHOUT ROWID;
         CREATE UNIQUE INDEX pairs_by_right ON pairs (link, right_key);
         CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            command TEXT NOT NULL,
            status TEXT NOT NULL,
            summary TEXT
         );
         CREATE TABLE journal (
            id INTEGER PRIMARY KEY,
            run INTEGER NOT NULL,
            at TEXT NOT NULL,
            link TEXT NOT NULL,
            left_key TEXT,
            right_key TEXT,
            side TEXT NOT NULL,
            op TEXT NOT NULL,
            field TEXT,
            old TEXT,
            new TEXT,
            reason TEXT NOT NULL,
            status TEXT NOT NULL
         );
         CREATE INDEX journal_by_left ON journal (link, left_key);
         CREATE INDEX journal_by_right ON journal (link, right_key);
         CREATE INDEX journal_by_run ON journal (run);
         CREATE INDEX journal_by_status ON journal (status) WHERE status = 'planned';
         CREATE TABLE conflicts (
            link TEXT NOT NULL,
            left_key TEXT NOT NULL,
            right_key TEXT NOT NULL,
            unit TEXT NOT NULL,
            left_value TEXT NOT NULL,
            right_value TEXT NOT NULL,
            base_value TEXT,
            cause TEXT NOT NULL,
            status TEXT NOT NULL,
            resolution TEXT,
            detected_run INTEGER NOT NULL,
            last_seen_run INTEGER NOT NULL,
            resolved_at TEXT,
            PRIMARY KEY (link, left_key, unit)
         );
         CREATE TABLE quarantine (
            link TEXT NOT NULL,
            side TEXT NOT NULL,
            key TEXT NOT NULL,
            field TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            detected_run INTEGER NOT NULL,
            last_seen_run INTEGER NOT NULL,
            PRIMARY KEY (link, side, key, field, kind)
         );",
        ),
        // v2: interrupted runs find their planned entries through `journal_by_run`; an
        // index on `status` cost every journaled write two index updates.
        M::up(DROP_STATUS_INDEX),
        // v3: a batch that applied is recorded as its range of entries, once, instead
        // of updating each entry from `planned` to `applied` (see `journal_applied`).
        M::up(JOURNAL_APPLIED),
        // v4: integer key parts in their sortable form (see `Key::encode`).
        M::up_with_hook("", |tx: &rusqlite::Transaction| {
            use rusqlite::functions::FunctionFlags;
            tx.create_scalar_function(
                "syncline_rekey",
                1,
                FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
                |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|k| rekey(&k))),
            )?;
            tx.execute_batch(&rekey_updates("syncline_rekey"))?;
            tx.remove_function("syncline_rekey", 1)?;
            Ok(())
        }),
        // v5: one journal entry for a batch's creates, its records listed by key.
        M::up(SQLITE_JOURNAL_MEMBERS.as_str()),
        // v6: those records listed a chunk per row.
        M::up(SQLITE_MEMBER_CHUNKS.as_str()),
        // v7: what each side holds where it is not the base (see `state::Held`).
        M::up(HELD),
        // v8: where each side's cursor got to (see `state::LinkReads`).
        M::up(READS),
        // v9: grouped entries may list updates (see `UPDATE_MEMBERS`).
        M::up(UPDATE_MEMBERS),
    ])
}

/// An encoded key of a store before v4 in this build's form: the same key, its integer
/// parts now sortable. A key that does not decode is left as it is.
fn rekey(encoded: &str) -> String {
    crate::model::Key::decode(encoded).map_or_else(|_| encoded.to_string(), |k| k.encode())
}

/// Re-encodes every stored key with the function `rekey` (SQLite: [`rekey`]; PostgreSQL:
/// the SQL function of [`PG_REKEY_FUNCTIONS`]). Only keys holding an `I` can change
/// (`replace` is case-sensitive in both); no new form equals an old one, so the unique
/// indexes hold throughout.
fn rekey_updates(rekey: &str) -> String {
    let has_i = |c: &str| format!("replace({c}, 'I', '') <> {c}");
    let both = format!("{} OR {}", has_i("left_key"), has_i("right_key"));
    format!(
        "UPDATE pairs SET left_key = {rekey}(left_key), right_key = {rekey}(right_key) WHERE {both};
         UPDATE journal SET left_key = {rekey}(left_key), right_key = {rekey}(right_key) WHERE {both};
         UPDATE conflicts SET left_key = {rekey}(left_key), right_key = {rekey}(right_key) WHERE {both};
         UPDATE quarantine SET key = {rekey}(key) WHERE {};",
        has_i("key")
    )
}

/// v7: per pair, the values a side's system holds where they differ from the base; per
/// link, the identities of the systems its pairs were made with.
const HELD: &str =
    "ALTER TABLE pairs ADD COLUMN held TEXT; ALTER TABLE links ADD COLUMN systems TEXT;";

const DROP_STATUS_INDEX: &str = "DROP INDEX journal_by_status;";

/// v5: a batch's creates that share everything but the record (same side, reason, no
/// field values) are journaled as one entry whose `records` counts them; its records
/// are listed in `journal_members` by the key they were journaled under. A first load's
/// million creates are then a thousand entries and a million small index rows instead
/// of a million entries with three indexes each. `records` is NULL for an entry of one
/// record, whose key is in the entry itself.
const JOURNAL_MEMBERS: &str = "
    ALTER TABLE journal ADD COLUMN records BIGINT;
    CREATE TABLE journal_members (
        link TEXT NOT NULL, key_side TEXT NOT NULL, key TEXT NOT NULL, entry BIGINT NOT NULL,
        PRIMARY KEY (link, key_side, key, entry))";

static SQLITE_JOURNAL_MEMBERS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{JOURNAL_MEMBERS} WITHOUT ROWID;"));

/// v6: a grouped entry's records are listed in chunks, one row each — the keys as a JSON
/// array, with the chunk's first and last key (in byte order) to find it by — instead of
/// a row per record: a first load's million membership rows were a tenth of its
/// state-store work. The text columns compare bytewise in both stores (PostgreSQL's are
/// `COLLATE "C"`), as syncline picks a chunk's first and last key.
const MEMBER_CHUNKS: &str = "
    CREATE TABLE journal_member_chunks (
        link TEXT NOT NULL, key_side TEXT NOT NULL, first_key TEXT {collate} NOT NULL,
        entry BIGINT NOT NULL, last_key TEXT {collate} NOT NULL, keys TEXT NOT NULL,
        PRIMARY KEY (link, key_side, first_key, entry)){without_rowid};
    INSERT INTO journal_member_chunks (link, key_side, first_key, entry, last_key, keys)
        SELECT link, key_side, min(key {collate}), entry, max(key {collate}), {list}
          FROM journal_members GROUP BY link, key_side, entry;
    DROP TABLE journal_members;";

static SQLITE_MEMBER_CHUNKS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    MEMBER_CHUNKS
        .replace("{collate}", "")
        .replace("{without_rowid}", " WITHOUT ROWID")
        .replace("{list}", "json_group_array(key)")
});

fn pg_member_chunks() -> String {
    MEMBER_CHUNKS
        .replace("{collate}", "COLLATE \"C\"")
        .replace("{without_rowid}", "")
        .replace("{list}", "json_agg(key)::text")
}

/// The same schema for a shared PostgreSQL store, [`VERSION`] steps. Versioned in
/// `syncline_schema`; each step upgrades from the previous version.
pub(crate) fn pg_migrations() -> [String; VERSION as usize] {
    [
        PG_SCHEMA.to_string(),
        DROP_STATUS_INDEX.to_string(),
        JOURNAL_APPLIED.to_string(),
        format!(
            "{PG_REKEY_FUNCTIONS}{}
             DROP FUNCTION pg_temp.syncline_rekey(text);
             DROP FUNCTION pg_temp.syncline_rekey_part(text);",
            rekey_updates("pg_temp.syncline_rekey")
        ),
        format!("{JOURNAL_MEMBERS};"),
        pg_member_chunks(),
        // Idempotent, as the other PostgreSQL steps are by construction.
        HELD.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS"),
        READS.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS"),
        UPDATE_MEMBERS.to_string(),
    ]
}

/// v9: a batch's updates of one field are one grouped entry, each record listed in its
/// member chunk as `[key, old, new]` beside the keys of grouped creates. No table
/// changes; the version keeps a build before it from misreading such a chunk (it
/// refuses a store of a later version).
const UPDATE_MEMBERS: &str = "-- v9: grouped updates in journal_member_chunks";

/// v8: how a link's sides were last read (a JSON `LinkReads`).
const READS: &str = "ALTER TABLE links ADD COLUMN reads TEXT;";

const PG_SCHEMA: &str = "
    CREATE TABLE links (name text PRIMARY KEY, identity text NOT NULL, run_seq bigint NOT NULL);
    CREATE TABLE pairs (
        link text NOT NULL, left_key text NOT NULL, right_key text NOT NULL, base text NOT NULL,
        marks text, tombstone text, PRIMARY KEY (link, left_key));
    CREATE UNIQUE INDEX pairs_by_right ON pairs (link, right_key);
    CREATE TABLE runs (
        id bigserial PRIMARY KEY, started_at text NOT NULL, finished_at text, command text NOT NULL,
        status text NOT NULL, summary text);
    CREATE TABLE journal (
        id bigserial PRIMARY KEY, run bigint NOT NULL, at text NOT NULL, link text NOT NULL,
        left_key text, right_key text, side text NOT NULL, op text NOT NULL, field text,
        old text, new text, reason text NOT NULL, status text NOT NULL);
    CREATE INDEX journal_by_left ON journal (link, left_key);
    CREATE INDEX journal_by_right ON journal (link, right_key);
    CREATE INDEX journal_by_run ON journal (run);
    CREATE INDEX journal_by_status ON journal (status) WHERE status = 'planned';
    CREATE TABLE conflicts (
        link text NOT NULL, left_key text NOT NULL, right_key text NOT NULL, unit text NOT NULL,
        left_value text NOT NULL, right_value text NOT NULL, base_value text, cause text NOT NULL,
        status text NOT NULL, resolution text, detected_run bigint NOT NULL, last_seen_run bigint NOT NULL,
        resolved_at text, PRIMARY KEY (link, left_key, unit));
    CREATE TABLE quarantine (
        link text NOT NULL, side text NOT NULL, key text NOT NULL, field text NOT NULL, kind text NOT NULL,
        reason text NOT NULL, detected_run bigint NOT NULL, last_seen_run bigint NOT NULL,
        PRIMARY KEY (link, side, key, field, kind));
";

/// v4 for PostgreSQL: a session-private `syncline_rekey` in SQL for [`rekey_updates`].
/// An `I` part (`I42`, `I-7`) becomes `P`/`M`, a width letter and the digits
/// (complemented below zero), as `Key::encode` writes it; parts are split on the
/// separator (U+001F).
const PG_REKEY_FUNCTIONS: &str = r"
    CREATE FUNCTION pg_temp.syncline_rekey_part(p text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
      SELECT CASE
        WHEN p ~ '^I[0-9]{1,19}$' THEN 'P' || chr(ascii('a') + length(p) - 2) || substr(p, 2)
        WHEN p ~ '^I-[0-9]{1,19}$' THEN 'M' || chr(ascii('a') + 21 - length(p))
          || translate(substr(p, 3), '0123456789', '9876543210')
        ELSE p END
    $$;
    CREATE FUNCTION pg_temp.syncline_rekey(k text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
      SELECT CASE WHEN k IS NULL OR strpos(k, chr(31)) = 0 THEN pg_temp.syncline_rekey_part(k)
        ELSE (SELECT string_agg(pg_temp.syncline_rekey_part(part), chr(31) ORDER BY n)
              FROM unnest(string_to_array(k, chr(31))) WITH ORDINALITY AS t(part, n)) END
    $$;
";

/// The journal entries of `run` with ids in `(after_id, upto_id]` that were still
/// `planned` when their batch committed are `applied`. Within a run the ranges are
/// disjoint and ordered, so the one range that can hold an entry is the first whose
/// `upto_id` reaches it.
const JOURNAL_APPLIED: &str = "
    CREATE TABLE journal_applied (
        run BIGINT NOT NULL, after_id BIGINT NOT NULL, upto_id BIGINT NOT NULL,
        PRIMARY KEY (run, upto_id));
";

/// Whether journal entry `{j}` (an alias) is `planned` but its batch committed: an SQL
/// condition, written once for every query that reads a status.
pub(crate) fn applied_by_batch(j: &str) -> String {
    format!(
        "({j}.status = 'planned' AND COALESCE((SELECT a.after_id FROM journal_applied a
            WHERE a.run = {j}.run AND a.upto_id >= {j}.id ORDER BY a.upto_id LIMIT 1), {j}.id) < {j}.id)"
    )
}

/// Per-run scratch space, outside the store's file (SQLite TEMP) or session-private
/// (PostgreSQL temporary tables). Referred to unqualified: temporary names come first.
pub const SQLITE_TEMP_TABLES: &str = "
    CREATE TEMP TABLE IF NOT EXISTS seen (side TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (side, key)) WITHOUT ROWID;
    CREATE TEMP TABLE IF NOT EXISTS unlinked (
        id INTEGER PRIMARY KEY, side TEXT NOT NULL, key TEXT NOT NULL, key_text TEXT NOT NULL, match_key TEXT,
        ref TEXT, record TEXT NOT NULL, matched INTEGER NOT NULL DEFAULT 0);
    CREATE TEMP TABLE IF NOT EXISTS matches (
        id INTEGER PRIMARY KEY, left_id INTEGER NOT NULL UNIQUE, right_id INTEGER NOT NULL UNIQUE, how TEXT NOT NULL);
    CREATE TEMP TABLE IF NOT EXISTS plan (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
";

pub const PG_TEMP_TABLES: &str = "
    CREATE TEMP TABLE IF NOT EXISTS seen (side text NOT NULL, key text NOT NULL, PRIMARY KEY (side, key));
    CREATE TEMP TABLE IF NOT EXISTS unlinked (
        id bigserial PRIMARY KEY, side text NOT NULL, key text NOT NULL, key_text text NOT NULL, match_key text,
        ref text, record text NOT NULL, matched bigint NOT NULL DEFAULT 0);
    CREATE TEMP TABLE IF NOT EXISTS matches (
        id bigserial PRIMARY KEY, left_id bigint NOT NULL UNIQUE, right_id bigint NOT NULL UNIQUE, how text NOT NULL);
    CREATE TEMP TABLE IF NOT EXISTS plan (seq bigserial PRIMARY KEY, body text NOT NULL);
";

/// Indexes on the staged records, built after staging (see `match_unlinked`).
pub const TEMP_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS unlinked_match ON unlinked (match_key);
";

/// Only for links that match by `right_ref` / `left_ref`.
pub const TEMP_REF_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS unlinked_ref ON unlinked (ref);
    CREATE INDEX IF NOT EXISTS unlinked_text ON unlinked (key_text);
";
