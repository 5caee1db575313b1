//! PostgreSQL's writes: bulk creates by `COPY` (binary where every value has an exact
//! binary form) or one `INSERT … SELECT FROM unnest`, bulk updates by one statement per
//! run of same-shaped updates, the rest one at a time under a savepoint, each
//! conditional on what was read, and the read-back of what was stored before COMMIT.

use super::*;

/// Where each key column sits among a create's `cols`, and how to read it, when the
/// new row's key is exactly what is sent: every key column is sent and is of a type
/// PostgreSQL stores as given (integers, uuid, text, varchar). Otherwise `None`, and the
/// key comes back from `RETURNING`.
fn copy_key(all: &[PgColumn], spec: &ReadSpec, cols: &[&str]) -> Option<Vec<(usize, PgKind)>> {
    spec.key
        .iter()
        .map(|k| {
            let at = cols.iter().position(|c| c == k)?;
            let col = all.iter().find(|c| &c.name == k)?;
            let stored_as_sent =
                matches!(col.kind, PgKind::Int | PgKind::Uuid) || col.is_plain_text();
            stored_as_sent.then_some((at, col.kind))
        })
        .collect()
}

/// Appends `text` in `COPY`'s text format: backslash, tab, newline and carriage return
/// are escaped; everything else is taken literally.
fn copy_escape(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Rows in `COPY`'s text format.
fn copy_text_rows(chunk: &[&Vec<(Name, Value)>]) -> Vec<u8> {
    let mut data = Vec::with_capacity(chunk.len() * 128);
    for values in chunk {
        for (i, (_, v)) in values.iter().enumerate() {
            if i > 0 {
                data.push(b'\t');
            }
            match v.sql_text() {
                None => data.extend_from_slice(b"\\N"),
                Some(text) => copy_escape(&mut data, &text),
            }
        }
        data.push(b'\n');
    }
    data
}

impl PostgresConnector {
    /// Whether PostgreSQL stores this create exactly as sent, on a table without
    /// triggers or rules: every value already of its column's type (an integer for an
    /// integer column, a timestamp for a timestamp column without a precision that would
    /// round it, text for `text`/`varchar`, …; decimals are checked to fit before
    /// writing), and no column of the link left out that a default would fill. Anything
    /// else is read back.
    pub(super) fn stored_as_sent(all: &[PgColumn], spec: &ReadSpec, write: &Write) -> bool {
        use binary::BinaryForm as F;
        let Write::Create { values } = write else {
            return false;
        };
        let column = |name: &str| all.iter().find(|c| c.name == name);
        let kept = values.iter().all(|(c, v)| {
            let Some(col) = column(c) else { return false };
            let no_precision = !col.type_name.contains('(');
            match (col.binary, v) {
                (F::Int2 | F::Int4 | F::Int8, Value::Integer(_))
                | (F::Float8, Value::Real(_))
                | (F::Numeric, Value::Numeric(_) | Value::Integer(_))
                | (F::Bool, Value::Bool(_))
                | (F::Date, Value::Date(_))
                | (F::Uuid, Value::Uuid(_))
                | (F::Bytea, Value::Blob(_))
                | (F::Jsonb, Value::Json(_)) => true,
                (F::Timestamp, Value::Timestamp(_)) | (F::TimestampTz, Value::TimestampTz(_)) => {
                    no_precision
                }
                // `character(n)` pads; enums are text in, text out.
                (F::Text, Value::Text(_)) => col.cast_type != "character",
                (F::Text, Value::Json(_)) => col.cast_type == "json",
                _ => false,
            }
        });
        kept && spec.columns.iter().all(|c| {
            values.iter().any(|(sent, _)| **sent == **c)
                || column(c).is_some_and(|col| !col.has_default)
        })
    }

    /// `lhs` (a column, maybe qualified) still holds the value in text parameter
    /// `param`, for a conditional write. Types without an equality operator compare in a
    /// form that has one: `json` as `jsonb` (the same document, whatever its spacing),
    /// the geometric types and `xml` by their text; `character(n)` as unbounded
    /// `bpchar` (see [`type_of`](Self::type_of)), which compares without the padding.
    pub(super) fn still_holds(all: &[PgColumn], column: &str, lhs: &str, param: &str) -> String {
        let ty = Self::type_of(all, column);
        match ty {
            "json" => format!("{lhs}::jsonb IS NOT DISTINCT FROM CAST({param} AS jsonb)"),
            "xml" | "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle" => {
                format!("{lhs}::text IS NOT DISTINCT FROM CAST({param} AS {ty})::text")
            }
            _ => format!("{lhs} IS NOT DISTINCT FROM CAST({param} AS {ty})"),
        }
    }

    /// The new record's key from a `RETURNING key::text, …` row.
    pub(super) fn returned_key(all: &[PgColumn], spec: &ReadSpec, row: &postgres::Row) -> Key {
        Key(spec
            .key
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let kind = all
                    .iter()
                    .find(|c| &c.name == name)
                    .map_or(PgKind::Text, |c| c.kind);
                kind.parse(row.get::<_, Option<String>>(i))
            })
            .collect())
    }

    /// The type to `CAST` a value's text to before it is assigned to or compared with
    /// column `name`: without length or precision, because an explicit cast to
    /// `varchar(3)` truncates silently where the assignment refuses.
    /// `character` alone is `character(1)`: cast to unbounded `bpchar` instead, so that
    /// the assignment to `character(n)` pads or refuses, never cuts.
    pub(super) fn type_of<'a>(cols: &'a [PgColumn], name: &str) -> &'a str {
        match cols
            .iter()
            .find(|c| c.name == name)
            .map_or("text", |c| c.cast_type.as_str())
        {
            "character" => "bpchar",
            other => other,
        }
    }

    /// Bulk creates through `COPY … FROM STDIN`: the fastest way in, used when the new
    /// rows' keys are among the values sent (see [`copy_key`]). In the binary format when
    /// every value has an exact binary form in its column (see [`binary`]), else as text.
    /// `columns` are `cols` as the table describes them (`None`: not found there).
    pub(super) fn copy_creates(
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        cols: &[&str],
        columns: &[Option<&PgColumn>],
        chunk: &[&Vec<(Name, Value)>],
    ) -> Result<(), postgres::Error> {
        use std::io::Write as _;
        let columns: Option<Vec<&PgColumn>> = columns.iter().copied().collect();
        let (data, format) = match columns.and_then(|columns| binary::encode_rows(&columns, chunk))
        {
            Some(data) => (data, " (FORMAT binary)"),
            None => (copy_text_rows(chunk), ""),
        };
        let sql = format!(
            "COPY {table} ({}) FROM STDIN{format}",
            quote_list(cols, quote)
        );
        let mut writer = tx.copy_in(sql.as_str())?;
        // A failed write means the connection broke; `finish` reports it as the error.
        let _ = writer.write_all(&data);
        writer.finish().map(|_| ())
    }

    /// Bulk creates through one `INSERT … SELECT FROM unnest(…) RETURNING key`: the
    /// system assigns (or normalizes) the keys and says which.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn insert_creates(
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        all: &[PgColumn],
        spec: &ReadSpec,
        key_text: &str,
        cols: &[&str],
        chunk: &[&Vec<(Name, Value)>],
    ) -> Result<Vec<Key>, postgres::Error> {
        let arrays: Vec<Vec<Option<String>>> = (0..cols.len())
            .map(|c| chunk.iter().map(|v| v[c].1.to_sql_text()).collect())
            .collect();
        let (unnest, names) = unnest_text_arrays(cols.len(), "c");
        let sql = if cols.is_empty() {
            format!("INSERT INTO {table} SELECT FROM generate_series(1, $1) RETURNING {key_text}")
        } else {
            format!(
                "INSERT INTO {table} ({}) SELECT {} FROM {unnest} WITH ORDINALITY AS u({names}, ord) ORDER BY ord RETURNING {key_text}",
                quote_list(cols, quote),
                cols.iter()
                    .enumerate()
                    .map(|(n, c)| format!("CAST(u.c{n} AS {})", Self::type_of(all, c)))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let count = chunk.len() as i64;
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = if cols.is_empty() {
            vec![&count]
        } else {
            array_params(&arrays)
        };
        Ok(tx
            .query(&sql, &params)?
            .iter()
            .map(|row| Self::returned_key(all, spec, row))
            .collect())
    }

    /// Conditional updates that all set and expect the same columns, in one statement:
    /// each row is changed only if it still holds the values read. Returns, per write,
    /// whether it applied (`false`: the row changed or went since it was read).
    pub(super) fn bulk_update(
        tx: &mut postgres::Transaction<'_>,
        table: &str,
        all: &[PgColumn],
        spec: &ReadSpec,
        writes: &[Write],
        returning: Option<&[PgColumn]>,
    ) -> Result<Vec<Option<Option<Record>>>, postgres::Error> {
        let Some(Write::Update { set, expect, .. }) = writes.first() else {
            return Ok(Vec::new());
        };
        // One text array per key column, set column and expected column, in that order;
        // `u.aN` is the Nth.
        let set_cols: Vec<&str> = set.iter().map(|(c, _)| &**c).collect();
        let expect_cols: Vec<&str> = expect.iter().map(|(c, _)| &**c).collect();
        let (n_key, n_set) = (spec.key.len(), set_cols.len());
        let mut arrays: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(writes.len()); n_key + n_set + expect_cols.len()];
        for w in writes {
            let Write::Update {
                key, set, expect, ..
            } = w
            else {
                unreachable!("an update run holds updates only")
            };
            let texts = key
                .0
                .iter()
                .map(Value::to_sql_text)
                .chain(set.iter().map(|(_, v)| v.to_sql_text()))
                .chain(expect.iter().map(|(_, v)| v.to_sql_text()));
            for (array, text) in arrays.iter_mut().zip(texts) {
                array.push(text);
            }
        }
        let cast = |n: usize, col: &str| format!("CAST(u.a{n} AS {})", Self::type_of(all, col));
        let sets = set_cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = {}", quote(c), cast(n_key + i, c)))
            .collect::<Vec<_>>()
            .join(", ");
        let conditions = spec
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t.{} = {}", quote(k), cast(i, k)))
            .chain(expect_cols.iter().enumerate().map(|(i, c)| {
                Self::still_holds(
                    all,
                    c,
                    &format!("t.{}", quote(c)),
                    &format!("u.a{}", n_key + n_set + i),
                )
            }))
            .collect::<Vec<_>>()
            .join(" AND ");
        let (unnest, names) = unnest_text_arrays(arrays.len(), "a");
        // The rows as stored come back with the statement, where nothing else (a trigger,
        // a rule) can change them after it: no second query to read them back.
        let stored_cols = returning.map_or_else(String::new, |cols| {
            cols.iter()
                .map(|c| format!(", t.{}::text", quote(&c.name)))
                .collect()
        });
        let sql = format!(
            "UPDATE {table} AS t SET {sets} FROM {unnest} WITH ORDINALITY AS u({names}, ord) WHERE {conditions} RETURNING u.ord{stored_cols}",
        );
        let params = array_params(&arrays);
        // Per write: `None` stale; `Some(stored)` applied, with the row when asked.
        let mut applied: Vec<Option<Option<Record>>> = vec![None; writes.len()];
        for row in tx.query(&sql, &params)? {
            let ord: i64 = row.get(0);
            let record = returning.map(|cols| Self::to_record_from(&row, 1, cols, spec.key.len()));
            if let Some(slot) = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| applied.get_mut(i))
            {
                *slot = Some(record);
            }
        }
        Ok(applied)
    }

    /// One batch inside one transaction; an error says whether it came before COMMIT.
    pub(super) fn apply_once(
        &mut self,
        spec: &ReadSpec,
        writes: &[Write],
    ) -> Result<BatchResult, (postgres::Error, bool)> {
        let all = self
            .columns
            .get(&spec.collection)
            .cloned()
            .unwrap_or_default();
        let table = quote_table(&spec.collection);
        let key_text = spec
            .key
            .iter()
            .map(|k| format!("{}::text", quote(k)))
            .collect::<Vec<_>>()
            .join(", ");
        let retry = |e: postgres::Error| (e, true);
        let mut tx = self.client.transaction().map_err(retry)?;
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];

        // Creates with the same columns go in one statement per chunk; if one of them is
        // refused, that chunk is replayed row by row to find which.
        for run in crate::connectors::sql::create_runs(writes, CREATE_CHUNK) {
            let (i, j) = (run.start, run.end);
            let Write::Create { values } = &writes[i] else {
                unreachable!("runs start with a create")
            };
            let cols: Vec<&str> = values.iter().map(|(c, _)| &**c).collect();
            // The run's creates all send these columns: looked up once, for the fit check
            // below and the COPY's binary forms.
            // Values the columns cannot hold exactly are refused here, by name, since
            // PostgreSQL would round them silently.
            let run_columns: Vec<Option<&PgColumn>> = cols
                .iter()
                .map(|c| all.iter().find(|col| col.name == *c))
                .collect();
            let mut positions = Vec::new();
            let mut chunk: Vec<&Vec<(Name, Value)>> = Vec::new();
            for (n, w) in writes.iter().enumerate().take(j).skip(i) {
                let Write::Create { values } = w else {
                    unreachable!("chunk holds creates only")
                };
                match values
                    .iter()
                    .zip(&run_columns)
                    .try_for_each(|((c, v), col)| types::check_fits_in(*col, c, v))
                {
                    Ok(()) => {
                        positions.push(n);
                        chunk.push(values);
                    }
                    Err(why) => outcomes[n] = Some(WriteOutcome::Rejected(why)),
                }
            }
            if chunk.is_empty() {
                continue;
            }
            tx.batch_execute("SAVEPOINT chunk").map_err(retry)?;
            let bulk = match copy_key(&all, spec, &cols) {
                Some(key_at) => {
                    Self::copy_creates(&mut tx, &table, &cols, &run_columns, &chunk).map(|()| {
                        chunk
                            .iter()
                            .map(|values| {
                                Key(key_at
                                    .iter()
                                    .map(|&(at, kind)| match &values[at].1 {
                                        // The key as the column holds it, as a scan reads it.
                                        v @ Value::Integer(_) if kind == PgKind::Int => v.clone(),
                                        v => kind.parse(v.to_sql_text()),
                                    })
                                    .collect())
                            })
                            .collect()
                    })
                }
                None => Self::insert_creates(&mut tx, &table, &all, spec, &key_text, &cols, &chunk),
            };
            match bulk {
                Ok(keys) => {
                    tx.batch_execute("RELEASE chunk").map_err(retry)?;
                    for (&n, key) in positions.iter().zip(keys) {
                        outcomes[n] = Some(WriteOutcome::Created(key));
                    }
                }
                Err(e) if is_record_error(&e) => {
                    tx.batch_execute("ROLLBACK TO chunk").map_err(retry)?;
                    for &n in &positions {
                        let Write::Create { values } = &writes[n] else {
                            continue;
                        };
                        let sql = if values.is_empty() {
                            format!("INSERT INTO {table} DEFAULT VALUES RETURNING {key_text}")
                        } else {
                            format!(
                                "INSERT INTO {table} ({}) VALUES ({}) RETURNING {key_text}",
                                quote_list(values.iter().map(|(c, _)| c), quote),
                                values
                                    .iter()
                                    .enumerate()
                                    .map(|(p, (c, _))| format!(
                                        "CAST(${}::text AS {})",
                                        p + 1,
                                        Self::type_of(&all, c)
                                    ))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        let texts: Vec<Option<String>> =
                            values.iter().map(|(_, v)| v.to_sql_text()).collect();
                        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
                            .iter()
                            .map(|t| t as &(dyn postgres::types::ToSql + Sync))
                            .collect();
                        tx.batch_execute("SAVEPOINT one").map_err(retry)?;
                        match tx.query_one(&sql, &params) {
                            Ok(row) => {
                                tx.batch_execute("RELEASE one").map_err(retry)?;
                                let key = Self::returned_key(&all, spec, &row);
                                outcomes[n] = Some(WriteOutcome::Created(key));
                            }
                            Err(e) if is_record_error(&e) => {
                                tx.batch_execute("ROLLBACK TO one").map_err(retry)?;
                                outcomes[n] = Some(WriteOutcome::Rejected(db_message(&e)));
                            }
                            Err(e) => return Err(retry(e)),
                        }
                    }
                }
                Err(e) => return Err(retry(e)),
            }
        }

        // Whether a trigger or a rule may change a row after the statement that wrote it:
        // then what was stored is read back at the end, else it comes with the write.
        let rewrites = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::text::regclass AND NOT tgisinternal)
                     OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = $1::text::regclass AND rulename <> '_RETURN')",
                &[&table],
            )
            .map_err(retry)?
            .get::<_, bool>(0);
        let spec_cols = crate::connectors::sql::pick_columns(&self.name, spec, &all, |c| &c.name)
            .unwrap_or_default();
        let mut returned: Vec<Record> = Vec::new();
        // Updates that set and expect the same columns go in one statement per run: the
        // rows it changes are those still holding what was read, the rest are stale. If
        // one is refused, the run is left to the row-by-row pass below to find which.
        for run in crate::connectors::sql::update_runs(writes, CREATE_CHUNK) {
            let batch = &writes[run.clone()];
            let fits = batch.iter().all(|w| match w {
                Write::Update { set, .. } => set
                    .iter()
                    .all(|(c, v)| types::check_fits(&all, c, v).is_ok()),
                _ => false,
            });
            if batch.len() < 2 || !fits {
                continue;
            }
            tx.batch_execute("SAVEPOINT updates").map_err(retry)?;
            let returning = (!rewrites).then_some(spec_cols.as_slice());
            match Self::bulk_update(&mut tx, &table, &all, spec, batch, returning) {
                Ok(applied) => {
                    tx.batch_execute("RELEASE updates").map_err(retry)?;
                    for (offset, applied) in applied.into_iter().enumerate() {
                        outcomes[run.start + offset] = Some(match applied {
                            Some(stored) => {
                                returned.extend(stored);
                                WriteOutcome::Applied
                            }
                            None => WriteOutcome::Stale,
                        });
                    }
                }
                Err(e) if is_record_error(&e) => {
                    tx.batch_execute("ROLLBACK TO updates").map_err(retry)?;
                }
                Err(e) => return Err(retry(e)),
            }
        }

        // The remaining updates, and deletes, each conditional on the values read.
        for (n, write) in writes.iter().enumerate() {
            if outcomes[n].is_some() {
                continue;
            }
            let (sql, texts) = match write {
                Write::Create { .. } => continue,
                Write::Update { set, .. }
                    if let Err(why) = set
                        .iter()
                        .try_for_each(|(c, v)| types::check_fits(&all, c, v)) =>
                {
                    outcomes[n] = Some(WriteOutcome::Rejected(why));
                    continue;
                }
                conditional => {
                    let sql = crate::connectors::sql::conditional_write_sql(
                        &PgDialect(&all),
                        &table,
                        &spec.key,
                        conditional,
                    )
                    .expect("an update or a delete");
                    let (set, key, expect) = crate::connectors::sql::conditional_parts(conditional)
                        .expect("an update or a delete");
                    let texts: Vec<Option<String>> = set
                        .iter()
                        .map(|(_, v)| v.to_sql_text())
                        .chain(key.0.iter().map(Value::to_sql_text))
                        .chain(expect.iter().map(|(_, v)| v.to_sql_text()))
                        .collect();
                    (sql, texts)
                }
            };
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
                .iter()
                .map(|t| t as &(dyn postgres::types::ToSql + Sync))
                .collect();
            tx.batch_execute("SAVEPOINT one").map_err(retry)?;
            match tx.execute(&sql, &params) {
                Ok(count) => {
                    tx.batch_execute("RELEASE one").map_err(retry)?;
                    outcomes[n] = Some(if count == 0 {
                        WriteOutcome::Stale
                    } else {
                        WriteOutcome::Applied
                    });
                }
                Err(e) if is_record_error(&e) => {
                    tx.batch_execute("ROLLBACK TO one").map_err(retry)?;
                    outcomes[n] = Some(WriteOutcome::Rejected(db_message(&e)));
                }
                Err(e) => return Err(retry(e)),
            }
        }
        let outcomes: Vec<WriteOutcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every write has an outcome"))
            .collect();
        // Read back before COMMIT: the rows written are locked by this transaction (and
        // created ones invisible to others), so this is what the writes stored. A create
        // PostgreSQL stores exactly as sent is not read back (see `stored_as_sent`).
        let already: std::collections::HashSet<String> =
            returned.iter().map(|r| r.key.encode()).collect();
        let keys: Vec<Key> = BatchResult::written_keys_where(writes, &outcomes, |w| {
            rewrites || !Self::stored_as_sent(&all, spec, w)
        })
        .into_iter()
        .filter(|k| !already.contains(&k.encode()))
        .collect();
        let mut stored = returned;
        if !keys.is_empty() {
            let cols = spec_cols.as_slice();
            let arrays: Vec<Vec<Option<String>>> = (0..spec.key.len())
                .map(|i| keys.iter().map(|k| k.0[i].to_sql_text()).collect())
                .collect();
            let params = array_params(&arrays);
            let rows = tx
                .query(Self::fetch_sql(spec, cols).as_str(), &params)
                .map_err(retry)?;
            stored.extend(
                rows.iter()
                    .map(|r| Self::to_record(r, cols, spec.key.len())),
            );
        }
        // From here on the outcome of a failure is unknown: never retried.
        tx.commit().map_err(|e| (e, false))?;
        Ok(BatchResult::with_stored(writes, outcomes, stored))
    }
}

/// PostgreSQL's conditional writes: text parameters cast to each column's type, keys
/// compared with `=` (which an index serves; `IS NOT DISTINCT FROM` is not).
struct PgDialect<'c>(&'c [PgColumn]);

impl crate::connectors::sql::Dialect for PgDialect<'_> {
    fn assign(&self, column: &str, n: usize) -> String {
        format!(
            "{} = CAST(${n}::text AS {})",
            quote(column),
            PostgresConnector::type_of(self.0, column)
        )
    }
    fn still_holds(&self, column: &str, n: usize) -> String {
        PostgresConnector::still_holds(self.0, column, &quote(column), &format!("${n}::text"))
    }
    fn key_equals(&self, column: &str, n: usize) -> String {
        self.assign(column, n)
    }
}
