//! What the SQL kinds share, so each keeps only its type codec, its dialect and its
//! fast paths (COPY, unnest, multi-row inserts): quoting, the text of conditional
//! writes (see [`Dialect`]), the batch retry policy of network servers, the runs of
//! writes one statement can carry, and PostgreSQL's TLS (which the state store uses
//! too).

pub mod pg;
pub mod tls;

use super::{BatchResult, ConnectorError, Failure, ReadSpec, SystemError, Write};
use crate::model::{Key, Name, Value};

/// Quotes an identifier with `q` (`"` for SQLite and PostgreSQL, `` ` `` for MySQL),
/// doubling any `q` inside it: nothing from the config reaches SQL unquoted.
pub(crate) fn quote_ident(ident: &str, q: char) -> String {
    let doubled: String = [q, q].iter().collect();
    format!("{q}{}{q}", ident.replace(q, &doubled))
}

/// `a, b, c`: identifiers quoted by a connector's `quote`, for column and key lists.
pub(crate) fn quote_list<I>(idents: I, quote: fn(&str) -> String) -> String
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    idents
        .into_iter()
        .map(|i| quote(i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `schema.table` → (`Some(schema)`, `table`); a bare `table` has no schema.
pub(crate) fn split_collection(collection: &str) -> (Option<&str>, &str) {
    match collection.split_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, collection),
    }
}

/// A collection as a quoted, possibly schema-qualified, table name.
pub(crate) fn quote_collection(collection: &str, q: char) -> String {
    match split_collection(collection) {
        (Some(s), t) => format!("{}.{}", quote_ident(s, q), quote_ident(t, q)),
        (None, t) => quote_ident(t, q),
    }
}

/// The ` WHERE …` of a scan (see [`ReadSpec::since`] and [`ReadSpec::range`]), or
/// nothing: `quote` quotes a column as the dialect does, and `bind` turns each value
/// compared against into SQL (a placeholder it binds, or a literal).
pub(crate) fn scan_filter<'a>(
    spec: &'a ReadSpec,
    quote: fn(&str) -> String,
    bind: &mut dyn FnMut(&'a Value) -> String,
) -> String {
    let mut conditions = Vec::new();
    if let Some(since) = &spec.since {
        conditions.push(format!(
            "{} >= {}",
            quote(&since.column),
            bind(&since.value)
        ));
    }
    if let Some(range) = &spec.range {
        let key = format!("({})", quote_list(&spec.key, quote));
        for (bound, op) in [(&range.from, ">="), (&range.to, "<")] {
            if let Some(k) = bound {
                let values: Vec<String> = k.0.iter().map(&mut *bind).collect();
                conditions.push(format!("{key} {op} ({})", values.join(", ")));
            }
        }
    }
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// `SELECT range, COUNT(*), SUM(hash) … GROUP BY range` (see [`Connector::digests`]):
/// `bucket` is the dialect's expression for a row's range, `hash` its hash of a row.
pub(crate) fn digest_sql(table: &str, bucket: &str, hash: &str) -> String {
    format!(
        "SELECT r, COUNT(*) AS c, SUM(h) AS s FROM (SELECT {bucket} AS r, {hash} AS h FROM {table}) d GROUP BY r"
    )
}

/// A row's range as `CASE WHEN key < bound1 THEN 0 …`: for dialects without a search
/// over bounds (a range is `[bound i, bound i+1)`, range 0 everything below the first).
pub(crate) fn case_bucket(
    spec: &ReadSpec,
    quote: fn(&str) -> String,
    bounds: &[Key],
    bind: &mut dyn FnMut(&Value) -> String,
) -> String {
    if bounds.is_empty() {
        return "0".into();
    }
    let key = format!("({})", quote_list(&spec.key, quote));
    let mut case = String::from("CASE");
    for (i, bound) in bounds.iter().enumerate() {
        let values: Vec<String> = bound.0.iter().map(&mut *bind).collect();
        case.push_str(&format!(" WHEN {key} < ({}) THEN {i}", values.join(", ")));
    }
    case.push_str(&format!(" ELSE {} END", bounds.len()));
    case
}

/// Rows of `(range, count, sum)` as one digest per range, empty ranges included.
pub(crate) fn digests_from(
    ranges: usize,
    rows: impl IntoIterator<Item = (i64, i64, String)>,
) -> Vec<super::RangeDigest> {
    let mut out = vec![
        super::RangeDigest {
            rows: 0,
            digest: "0".into(),
        };
        ranges
    ];
    for (r, count, sum) in rows {
        if let Some(d) = usize::try_from(r).ok().and_then(|r| out.get_mut(r)) {
            d.rows = count as u64;
            d.digest = sum;
        }
    }
    out
}

/// A batch is retried this many times after a dropped connection or a serialization
/// failure, as long as its COMMIT was never sent.
const RETRIES: u32 = 3;

/// What a network connector gives [`apply_with_retries`], so every server kind follows
/// one retry policy.
pub(crate) trait RetryableBatches {
    fn system(&self) -> &str;

    /// One attempt at a batch in one transaction.
    fn attempt(&mut self, spec: &ReadSpec, writes: &[Write]) -> Result<BatchResult, AttemptFailed>;

    /// Reconnects if the connection is gone.
    ///
    /// # Errors
    /// The server cannot be reached again.
    fn recover(&mut self) -> Result<(), ConnectorError>;
}

/// Why an attempt at a batch failed.
pub(crate) struct AttemptFailed {
    pub error: SystemError,
    /// Whether the failure came before COMMIT was sent: only then is trying again safe
    /// (after it, the batch may have landed, and creates would be sent twice).
    pub before_commit: bool,
}

/// [`Connector::apply`] for network connectors: a batch that failed before its COMMIT
/// for a reason that may pass (the connection, a deadlock) is tried again on a sound
/// connection, with a growing pause.
pub(crate) fn apply_with_retries<C: RetryableBatches>(
    c: &mut C,
    spec: &ReadSpec,
    writes: &[Write],
) -> Result<BatchResult, ConnectorError> {
    let mut attempt = 0;
    loop {
        match c.attempt(spec, writes) {
            Ok(outcomes) => return Ok(outcomes),
            Err(f) if f.before_commit && f.error.failure != Failure::Other && attempt < RETRIES => {
                attempt += 1;
                tracing::warn!(system = %c.system(), attempt, error = %f.error, "batch failed before commit; retrying");
                std::thread::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)));
                c.recover()?;
            }
            Err(f) => {
                return Err(ConnectorError::query(
                    format!("system `{}`: write to {}", c.system(), spec.collection),
                    f.error,
                ));
            }
        }
    }
}

/// The columns `spec` reads (keys first), picked by name from a collection's columns.
pub(crate) fn pick_columns<C: Clone>(
    system: &str,
    spec: &ReadSpec,
    all: &[C],
    name_of: impl Fn(&C) -> &str,
) -> Result<Vec<C>, ConnectorError> {
    spec.key
        .iter()
        .chain(&spec.columns)
        .map(|name| {
            all.iter()
                .find(|c| name_of(c) == name)
                .cloned()
                .ok_or_else(|| ConnectorError::Query {
                    context: format!("system `{system}`: {}", spec.collection),
                    source: format!("column `{name}` does not exist").into(),
                })
        })
        .collect()
}

/// The values a create sends for `spec`'s key columns, in key order; `None` if one of
/// them is not sent (the system assigns it).
pub(crate) fn sent_key<'a>(spec: &ReadSpec, values: &'a [(Name, Value)]) -> Option<Vec<&'a Value>> {
    spec.key
        .iter()
        .map(|k| values.iter().find(|(c, _)| **c == **k).map(|(_, v)| v))
        .collect()
}

/// Runs of consecutive creates that write the same columns, each at most `max` long:
/// a connector can send each run as one statement.
pub(crate) fn create_runs(writes: &[Write], max: usize) -> Vec<std::ops::Range<usize>> {
    fn columns(w: &Write) -> Option<impl Iterator<Item = &Name> + Clone> {
        match w {
            Write::Create { values } => Some(values.iter().map(|(c, _)| c)),
            _ => None,
        }
    }
    let mut runs = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        let Some(first) = columns(&writes[i]) else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < writes.len()
            && j - i < max
            && columns(&writes[j]).is_some_and(|c| c.eq(first.clone()))
        {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// Runs of consecutive updates that set and expect the same columns, each at most `max`
/// long: a connector can send each run as one statement.
pub(crate) fn update_runs(writes: &[Write], max: usize) -> Vec<std::ops::Range<usize>> {
    fn columns(
        w: &Write,
    ) -> Option<(
        impl Iterator<Item = &Name> + Clone,
        impl Iterator<Item = &Name> + Clone,
    )> {
        match w {
            Write::Update { set, expect, .. } => {
                Some((set.iter().map(|(c, _)| c), expect.iter().map(|(c, _)| c)))
            }
            _ => None,
        }
    }
    let same = |a: &Write, b: &Write| match (columns(a), columns(b)) {
        (Some((sa, ea)), Some((sb, eb))) => sa.eq(sb) && ea.eq(eb),
        _ => false,
    };
    let mut runs = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        if columns(&writes[i]).is_none() {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < writes.len() && j - i < max && same(&writes[i], &writes[j]) {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// What differs between the SQL kinds in a conditional write's text. Parameters are
/// numbered from 1 (a kind with `?` placeholders ignores the number).
pub(crate) trait Dialect {
    /// `column = ` parameter `n`, cast for the column where the kind needs it.
    fn assign(&self, column: &str, n: usize) -> String;
    /// `column` still holds parameter `n`: null-safe equality, in a form the column's
    /// type can compare.
    fn still_holds(&self, column: &str, n: usize) -> String;
    /// Key column `column` is parameter `n`; by default as [`still_holds`](Self::still_holds).
    /// A kind whose null-safe equality cannot use an index says `=` (keys are never NULL).
    fn key_equals(&self, column: &str, n: usize) -> String {
        self.still_holds(column, n)
    }
}

/// An update's or a delete's parameters: (values set, key, values expected); `None` for a
/// create.
pub(crate) type Conditional<'w> = (&'w [(Name, Value)], &'w Key, &'w [(Name, Value)]);

pub(crate) fn conditional_parts(write: &Write) -> Option<Conditional<'_>> {
    match write {
        Write::Create { .. } => None,
        Write::Update {
            key, set, expect, ..
        } => Some((set, key, expect)),
        Write::Delete { key, expect, .. } => Some((&[], key, expect)),
    }
}

/// The text of an update or delete, conditional on the key and on what was read; `None`
/// for a create. Its parameters, in order: the values set, the key, the values expected.
pub(crate) fn conditional_write_sql(
    d: &impl Dialect,
    table: &str,
    key: &[String],
    write: &Write,
) -> Option<String> {
    let (set, _, expect) = conditional_parts(write)?;
    let sets: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, (c, _))| d.assign(c, i + 1))
        .collect();
    let first_key = set.len() + 1;
    let first_expect = first_key + key.len();
    let conds: Vec<String> = key
        .iter()
        .enumerate()
        .map(|(i, c)| d.key_equals(c, first_key + i))
        .chain(
            expect
                .iter()
                .enumerate()
                .map(|(i, (c, _))| d.still_holds(c, first_expect + i)),
        )
        .collect();
    Some(match write {
        Write::Update { .. } => format!(
            "UPDATE {table} SET {} WHERE {}",
            sets.join(", "),
            conds.join(" AND ")
        ),
        _ => format!("DELETE FROM {table} WHERE {}", conds.join(" AND ")),
    })
}
